package netfault_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcdproxy/etcdproxy/internal/netfault"
)

// quiet is how long a silenced connection must stay without an answer.
const quiet = 300 * time.Millisecond

// patience bounds every wait for bytes that should arrive.
const patience = 5 * time.Second

// target is a listener whose accepted connections the test holds itself,
// so it can write from either end and see exactly what arrives.
type target struct {
	ln       net.Listener
	accepted chan net.Conn
}

func startTarget(t *testing.T) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, accepted: make(chan net.Conn, 16)}
	go func() {
		defer close(tg.accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.accepted <- c
		}
	}()
	return tg
}

// next returns the next connection the target accepted.
func (tg *target) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-tg.accepted:
		return c
	case <-time.After(patience):
		t.Fatal("target accepted no connection")
		return nil
	}
}

// none checks that the target accepts no connection for a while.
func (tg *target) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-tg.accepted:
		c.Close()
		t.Fatal("target accepted a connection while silenced")
	case <-time.After(quiet):
	}
}

func (tg *target) close() {
	tg.ln.Close()
	for c := range tg.accepted {
		c.Close()
	}
}

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetWriteDeadline(time.Now().Add(patience)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

func expect(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(patience)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
}

// silent checks that nothing arrives on c for a while and that c is still
// open: the read ends by its deadline, not by EOF or a reset.
func silent(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("read %q while silenced", buf[:n])
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while silenced ended with %v, want the read deadline (the connection must stay open)", err)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSilenceResumeClose(t *testing.T) {
	defer goleak.VerifyNone(t)

	tg := startTarget(t)
	defer tg.close()
	f, err := netfault.Start(tg.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Data flows both ways.
	client := dial(t, f.Addr())
	defer client.Close()
	server := tg.next(t)
	defer server.Close()
	send(t, client, "ping")
	expect(t, server, "ping")
	send(t, server, "pong")
	expect(t, client, "pong")

	// Silenced: neither direction passes, and nothing is closed.
	f.Silence()
	if !f.Silenced() {
		t.Fatal("Silenced() = false after Silence")
	}
	send(t, client, "up while silent")
	send(t, server, "down while silent")
	silent(t, server)
	silent(t, client)

	// A connection made while silenced is accepted and held, but reaches
	// nothing: the target sees no connection, and the client no close.
	late := dial(t, f.Addr())
	defer late.Close()
	send(t, late, "late")
	tg.none(t)
	silent(t, late)

	// Resumed: what waited is delivered late, in order, on the same
	// connections, and they work as before.
	f.Resume()
	if f.Silenced() {
		t.Fatal("Silenced() = true after Resume")
	}
	expect(t, server, "up while silent")
	expect(t, client, "down while silent")
	send(t, client, "again")
	expect(t, server, "again")
	send(t, server, "again back")
	expect(t, client, "again back")

	lateServer := tg.next(t)
	defer lateServer.Close()
	expect(t, lateServer, "late")
	send(t, lateServer, "late back")
	expect(t, late, "late back")

	// A half-close is passed on after the bytes before it.
	send(t, client, "last")
	if err := client.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expect(t, server, "last")
	if err := server.SetReadDeadline(time.Now().Add(patience)); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the client's half-close the target read %d bytes, %v; want EOF", n, err)
	}
	send(t, server, "after EOF")
	expect(t, client, "after EOF")

	// Silence, then Close: Close ends the held connections (the client sees
	// them end) and every goroutine of the forwarder (goleak above).
	f.Silence()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{client, late} {
		if err := c.SetReadDeadline(time.Now().Add(patience)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after Close: %v, want the connection closed", err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", f.Addr(), time.Second); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}

func TestRefusedTargetClosesClient(t *testing.T) {
	defer goleak.VerifyNone(t)

	// A port that was free a moment ago: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	f, err := netfault.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := dial(t, f.Addr())
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(patience)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read through a forwarder whose target refuses: %v, want the connection closed", err)
	}
}
