package shell

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"time"
)

// memberMetrics serves /metrics as etcd's proxy does: the metrics of an etcd
// member, fetched from its own /metrics. It reaches the member however the
// proxy reaches it: host:port, an http(s) URL, or a unix socket (unix:path,
// unix://localhost:name, unix:///abs/path; unixs with TLS). It tries the
// endpoints in order until one answers, so a member that went away does
// not take the page with it.
type memberMetrics struct {
	endpoints func() []string
	tls       *tls.Config // towards etcd; nil for plaintext
}

func (h memberMetrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, ep := range h.endpoints() {
		body, err := h.fetch(ctx, ep)
		if err == nil {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write(body)
			return
		}
		lastErr = err
	}
	http.Error(w, fmt.Sprintf("no etcd member's metrics: %v", lastErr), http.StatusBadGateway)
}

// fetch reads one member's /metrics.
func (h memberMetrics) fetch(ctx context.Context, ep string) ([]byte, error) {
	client, target := h.target(ep)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", target, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// target returns the HTTP client and URL for a member's /metrics. The
// client keeps no connection open: a scrape comes now and then, and each
// one builds its client afresh.
func (h memberMetrics) target(ep string) (*http.Client, string) {
	tr := &http.Transport{TLSClientConfig: h.tls, DisableKeepAlives: true}
	client := &http.Client{Transport: tr}
	rest, unix := cutUnixScheme(ep)
	switch {
	case unix:
		socket := unixSocketPath(rest)
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}
		if !strings.HasPrefix(ep, "unixs:") {
			tr.TLSClientConfig = nil
			return client, "http://localhost/metrics"
		}
		if h.tls != nil && h.tls.ServerName == "" {
			tr.TLSClientConfig = h.tls.Clone()
			tr.TLSClientConfig.ServerName = path.Base(socket) // as clientv3 names the server
		}
		return client, "https://localhost/metrics"
	case strings.Contains(ep, "://"):
		return client, strings.TrimSuffix(ep, "/") + "/metrics"
	case h.tls != nil:
		return client, "https://" + ep + "/metrics"
	}
	return client, "http://" + ep + "/metrics"
}

// unixSocketPath is the socket file of a unix endpoint, given what follows
// its scheme, as clientv3 reads it: "//localhost:m0" is the file
// localhost:m0 in the working directory, "///abs/path" an absolute path,
// and anything else a path as written.
func unixSocketPath(rest string) string {
	if p, ok := strings.CutPrefix(rest, "//"); ok {
		return p // "/abs/path" keeps its leading slash
	}
	return rest
}
