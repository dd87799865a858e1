// Package netfault puts a pausable TCP forwarder in front of an address, so
// that a test or benchmark can make a server go silent the way it does when
// its host dies or the network path to it is cut: nothing answers, and
// nothing is closed or reset either. A client only finds out by its own
// deadlines or keepalives, which is the case a failover has to handle.
//
// Start listens on a free loopback port and forwards every connection it
// accepts to the target, each on its own upstream connection:
//
//	f, err := netfault.Start("127.0.0.1:2379")
//	// clients dial f.Addr() instead of the target
//	f.Silence() // the target is now unreachable, silently
//	f.Resume()  // and back
//	f.Close()
//
// Guarantees:
//
//   - While silenced, the forwarder reads nothing from any socket and
//     starts no write to any socket, in either direction. Bytes a client
//     or the target sends stay in the kernel's socket buffers, and once
//     those fill, TCP flow control stalls the sender, as with a peer that
//     stopped reading. Connections are never closed or reset because of
//     Silence: on the wire a silenced connection looks like one whose
//     peer vanished without a FIN.
//   - A connection accepted while silenced is held open, and its upstream
//     connection is not dialled until Resume: the listener keeps
//     accepting (as the kernel completes handshakes for a host whose
//     network stack still runs), but nothing reaches the target.
//   - Nothing is dropped. On Resume every held connection, including one
//     accepted while silenced, forwards again, starting with the bytes that
//     waited in the socket buffers. Those bytes arrive late, in order.
//   - Silence is not a barrier for a transfer already under way. A write
//     the forwarder had started (or had just decided to start) when
//     Silence was called may complete after Silence returns, and a read
//     that was blocked in the kernel may return after it. The data of such
//     a read, at most one buffer (32 KiB) per direction per connection, is
//     held and written after Resume. A test that needs silence for a
//     particular byte sends it after Silence returns.
//   - A connection ends when either side closes it or fails, and never
//     because of the forwarder, until Close. If the target refuses the
//     upstream connection, the client's connection is closed, as a
//     refused connection would be. An EOF from one side is
//     passed on as a half-close (CloseWrite) to the other, so the EOF
//     arrives after every byte that came before it.
//   - Close closes the listener and every connection, on both sides, and
//     returns once every goroutine the forwarder started has ended. It is
//     safe to call more than once, and whether silenced or not.
//
// Silence, Resume and Close may be called from any goroutine.
package netfault
