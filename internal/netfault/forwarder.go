package netfault

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// bufferSize is what one direction of one connection reads at a time, and
// so the most a read that was under way at Silence can hold back.
const bufferSize = 32 << 10

// Forwarder forwards TCP connections from a loopback port to a target, and
// can be silenced. See the package comment for what it guarantees.
type Forwarder struct {
	target string
	ln     net.Listener
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the forwarder started

	mu sync.Mutex
	// flowing is closed while traffic flows; while silenced it is an open
	// channel that Resume closes, releasing every waiting transfer at once.
	flowing chan struct{}
	conns   map[net.Conn]struct{} // both sides of every connection, for Close
	closed  bool
}

// Start listens on 127.0.0.1 on a free port and forwards every connection
// accepted there to target (host:port).
func Start(target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	flowing := make(chan struct{})
	close(flowing)
	f := &Forwarder{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		flowing: flowing,
		conns:   make(map[net.Conn]struct{}),
	}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the host:port clients dial instead of the target.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Target is the host:port the forwarder forwards to.
func (f *Forwarder) Target() string { return f.target }

// Silence stops all traffic, in both directions, on every connection,
// without closing any. It does nothing if already silenced.
func (f *Forwarder) Silence() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.flowing:
		f.flowing = make(chan struct{})
	default:
	}
}

// Resume lets traffic flow again, on the connections held while silenced
// too. It does nothing if not silenced.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.flowing:
	default:
		close(f.flowing)
	}
}

// Silenced reports whether the forwarder is silenced.
func (f *Forwarder) Silenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.flowing:
		return false
	default:
		return true
	}
}

// Cut closes every connection open now, as a network fault would, and
// goes on accepting new ones.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Close closes the listener and every connection, and waits until every
// goroutine of the forwarder has ended.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.wg.Wait()
		return nil
	}
	f.closed = true
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()

	f.cancel()
	err := f.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	f.wg.Wait()
	return err
}

// wait blocks while the forwarder is silenced. It reports false once the
// forwarder is closed.
func (f *Forwarder) wait() bool {
	f.mu.Lock()
	flowing := f.flowing
	f.mu.Unlock()
	select {
	case <-flowing:
		return f.ctx.Err() == nil
	case <-f.ctx.Done():
		return false
	}
}

// track records c for Close; false if the forwarder is already closed.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.ctx.Err() != nil {
				return
			}
			// A transient failure such as running out of descriptors:
			// keep listening, as a server would.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-f.ctx.Done():
				return
			}
			continue
		}
		if !f.track(c) {
			c.Close()
			return
		}
		// The accept goroutine is itself counted, so this Add cannot race
		// with the Wait in Close.
		f.wg.Add(1)
		go f.serve(c)
	}
}

// serve forwards one accepted connection. The upstream connection is
// dialled only once traffic may flow, so that a connection accepted while
// silenced reaches nothing.
func (f *Forwarder) serve(down net.Conn) {
	defer f.wg.Done()
	defer f.untrack(down)
	if !f.wait() {
		return
	}
	var d net.Dialer
	up, err := d.DialContext(f.ctx, "tcp", f.target)
	if err != nil {
		return
	}
	if !f.track(up) {
		up.Close()
		return
	}
	defer f.untrack(up)

	errc := make(chan error, 2)
	go func() { errc <- f.pump(up, down) }()
	go func() { errc <- f.pump(down, up) }()
	for range 2 {
		if err := <-errc; err != nil {
			// One direction failed: end the other too, as a reset
			// connection would.
			down.Close()
			up.Close()
		}
	}
}

// pump copies src to dst, pausing while silenced. It returns nil when src
// ends with EOF (passed on to dst as a half-close), and the error
// otherwise.
func (f *Forwarder) pump(dst, src net.Conn) error {
	buf := make([]byte, bufferSize)
	for {
		if !f.wait() {
			return net.ErrClosed
		}
		n, err := src.Read(buf)
		if n > 0 {
			// A read that was blocked when Silence was called holds its
			// data here until Resume rather than passing it on.
			if !f.wait() {
				return net.ErrClosed
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				return cw.CloseWrite()
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
