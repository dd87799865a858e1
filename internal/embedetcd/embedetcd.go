// Package embedetcd starts real etcd members in-process (go.etcd.io/etcd's
// embed package) on loopback addresses: single members for the proxy's
// --embedded-etcd mode, and multi-member clusters for tests. Ports are picked
// free on 127.0.0.1 unless given.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
)

// Member is one embedded etcd member.
type Member struct {
	Name      string
	ClientURL string // http://127.0.0.1:port, or a unix socket URL
	PeerURL   string
	Dir       string
	Etcd      *embed.Etcd
	cfg       *embed.Config
	mu        sync.Mutex // serializes Stop and Restart
}

// Options tune the members a test starts. Timing is etcd's default unless
// Configure changes it: 100 ms heartbeat, 1000 ms election timeout.
type Options struct {
	// LogLevel is etcd's log level; "error" when empty.
	LogLevel string
	// NoFsync trades durability for speed; for tests only.
	NoFsync bool
	// Configure, if set, adjusts each member's config before it starts.
	Configure func(*embed.Config)
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// parseClientURL parses a client URL, including the unix socket forms that
// net/url refuses: unix://localhost:m0 (a socket file named localhost:m0
// in the working directory, as etcd's integration framework names them)
// and unix:///abs/path.
func parseClientURL(s string) (*url.URL, error) {
	for _, scheme := range []string{"unix", "unixs"} {
		if rest, ok := strings.CutPrefix(s, scheme+"://"); ok {
			if strings.HasPrefix(rest, "/") {
				return &url.URL{Scheme: scheme, Path: rest}, nil
			}
			return &url.URL{Scheme: scheme, Host: rest}, nil
		}
	}
	return url.Parse(s)
}

func newConfig(name, dir, clientURL, peerURL string, opts Options) (*embed.Config, error) {
	cu, err := parseClientURL(clientURL)
	if err != nil {
		return nil, fmt.Errorf("client URL %q: %w", clientURL, err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("peer URL %q: %w", peerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = name + "=" + peerURL
	cfg.LogLevel = opts.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	cfg.UnsafeNoFsync = opts.NoFsync
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	return cfg, nil
}

// StartMember starts a single-member cluster and waits until it serves.
func StartMember(name, dir, clientURL, peerURL string, opts Options) (*Member, error) {
	cfg, err := newConfig(name, dir, clientURL, peerURL, opts)
	if err != nil {
		return nil, err
	}
	m := &Member{Name: name, ClientURL: clientURL, PeerURL: peerURL, Dir: dir, cfg: cfg}
	if err := m.start(); err != nil {
		return nil, err
	}
	return m, m.wait()
}

func (m *Member) start() error {
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		return fmt.Errorf("starting etcd member %s: %w", m.Name, err)
	}
	m.Etcd = e
	return nil
}

func (m *Member) wait() error {
	select {
	case <-m.Etcd.Server.ReadyNotify():
		return nil
	case err := <-m.Etcd.Err():
		closeEtcd(m.Etcd)
		return fmt.Errorf("etcd member %s failed: %w", m.Name, err)
	case <-time.After(60 * time.Second):
		closeEtcd(m.Etcd)
		return fmt.Errorf("etcd member %s not ready after 60s", m.Name)
	}
}

// closeEtcd closes e, ready or not. etcd's Close waits for its client
// listeners to start serving, which they do only once the server is ready
// (or stopping): a member of a cluster that never reached quorum is
// stopped first, or Close would wait forever.
func closeEtcd(e *embed.Etcd) {
	select {
	case <-e.Server.ReadyNotify():
	default:
		e.Server.HardStop()
	}
	e.Close()
}

// Stop stops the member; its data stays for Restart.
func (m *Member) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Etcd != nil {
		closeEtcd(m.Etcd)
		<-m.Etcd.Server.StopNotify()
		m.Etcd = nil
	}
}

// Restart starts a stopped member again on the same addresses and data.
func (m *Member) Restart() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Etcd != nil {
		return errors.New("member is running")
	}
	m.cfg.ClusterState = embed.ClusterStateFlagExisting
	if err := m.start(); err != nil {
		return err
	}
	return m.wait()
}

// Cluster is a set of members started together.
type Cluster struct {
	Members []*Member
}

// StartCluster starts n members on free loopback ports with data under dir
// and waits until every one serves. A port taken by another process
// between its choice and its use is chosen again (three tries).
func StartCluster(dir string, n int, opts Options) (*Cluster, error) {
	for try := 1; ; try++ {
		c, err := startCluster(fmt.Sprintf("%s/%d", dir, try), n, opts)
		if err == nil || try == 3 || !strings.Contains(err.Error(), "address already in use") {
			return c, err
		}
	}
}

func startCluster(dir string, n int, opts Options) (*Cluster, error) {
	c := &Cluster{}
	var initial []string
	for i := 0; i < n; i++ {
		ca, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		pa, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("m%d", i)
		c.Members = append(c.Members, &Member{Name: name, ClientURL: "http://" + ca, PeerURL: "http://" + pa, Dir: fmt.Sprintf("%s/%s", dir, name)})
		initial = append(initial, name+"="+"http://"+pa)
	}
	for _, m := range c.Members {
		cfg, err := newConfig(m.Name, m.Dir, m.ClientURL, m.PeerURL, opts)
		if err != nil {
			return nil, err
		}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcdtest"
		m.cfg = cfg
		if err := m.start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, m := range c.Members {
		if err := m.wait(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// Endpoints lists the members' client URLs.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.ClientURL
	}
	return eps
}

// Stop stops every member.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		m.Stop()
	}
}

// Isolate cuts raft traffic between m and every other member, in both
// directions, as a network partition would (etcd's own CutPeer: each side
// drops what it sends to the other and what it receives on its streams
// from the other). m keeps serving its client port, so a client of m sees
// a member that answers but has lost its leader: after an election timeout
// a leader m steps down (etcd runs raft with CheckQuorum) and a follower m
// stops following, while the others, if a quorum, elect a leader among
// themselves and keep committing. The cut is made on the members running
// at the time: one stopped then is not cut, and one restarted afterwards
// comes back with its own side mended.
func (c *Cluster) Isolate(m *Member) { c.partition(m, true) }

// Heal restores the raft traffic Isolate cut; m then catches up from the
// leader.
func (c *Cluster) Heal(m *Member) { c.partition(m, false) }

func (c *Cluster) partition(m *Member, cut bool) {
	ms := m.server()
	if ms == nil {
		return
	}
	for _, o := range c.Members {
		if o == m {
			continue
		}
		other := o.server()
		if other == nil {
			continue
		}
		if cut {
			ms.CutPeer(other.MemberID())
			other.CutPeer(ms.MemberID())
		} else {
			ms.MendPeer(other.MemberID())
			other.MendPeer(ms.MemberID())
		}
	}
}

// server is the member's running etcd server, or nil when stopped.
func (m *Member) server() *etcdserver.EtcdServer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Etcd == nil {
		return nil
	}
	return m.Etcd.Server
}
