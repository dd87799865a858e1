package embedetcd

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A member of a cluster that never reaches quorum (its peers never start)
// stops: etcd's own Close would wait for client serving that never begins.
func TestStopMemberThatNeverServed(t *testing.T) {
	var addrs []string
	for range 4 {
		a, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	m := &Member{Name: "m0", ClientURL: "http://" + addrs[0], PeerURL: "http://" + addrs[1], Dir: t.TempDir()}
	cfg, err := newConfig(m.Name, m.Dir, m.ClientURL, m.PeerURL, Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	var initial []string
	for i, pa := range []string{addrs[1], addrs[2], addrs[3]} {
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i, pa))
	}
	cfg.InitialCluster = strings.Join(initial, ",")
	cfg.InitialClusterToken = "never"
	m.cfg = cfg
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Etcd.Server.ReadyNotify():
		t.Fatal("a member without its peers became ready")
	case <-time.After(200 * time.Millisecond):
	}
	stopped := make(chan struct{})
	go func() {
		m.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop of a member that never served did not return in 30 s")
	}
}
