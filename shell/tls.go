package shell

import (
	"crypto/tls"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
)

// upstreamTLS returns the TLS configuration for talking to etcd (--cert,
// --key, --cacert, --insecure-skip-tls-verify), or nil for plaintext. As in
// etcd's proxy, the client certificate must carry an empty CN.
func upstreamTLS(cfg *Config, lg *zap.Logger) (*tls.Config, error) {
	var info *transport.TLSInfo
	if cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" {
		info = &transport.TLSInfo{TrustedCAFile: cfg.CACert, CertFile: cfg.Cert, KeyFile: cfg.Key, EmptyCN: true, Logger: lg}
	} else if cfg.InsecureSkipTLSVerify {
		info = &transport.TLSInfo{}
	}
	if info == nil {
		return nil, nil
	}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("TLS towards etcd (--cert/--key/--cacert): %w", err)
	}
	tc.InsecureSkipVerify = cfg.InsecureSkipTLSVerify
	if tc.InsecureSkipVerify {
		lg.Warn("--insecure-skip-tls-verify is set: etcd server certificates are not verified; use this for testing only")
	}
	return tc, nil
}

// listenTLS returns the TLS settings for the client-facing listener
// (--cert-file, --key-file, --trusted-ca-file, --auto-tls and friends), or nil
// for plaintext.
func listenTLS(cfg *Config, lg *zap.Logger) (*transport.TLSInfo, error) {
	var info *transport.TLSInfo
	switch {
	case cfg.TrustedCAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "":
		info = &transport.TLSInfo{TrustedCAFile: cfg.TrustedCAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, Logger: lg}
	case cfg.AutoTLS:
		dir := filepath.Join(cfg.DataDir, "fixtures", "proxy")
		self, err := transport.SelfCert(lg, dir, []string{"https://" + cfg.ListenAddr}, cfg.SelfSignedCertValidity)
		if err != nil {
			return nil, fmt.Errorf("--auto-tls: %w", err)
		}
		info = &self
	default:
		return nil, nil
	}
	info.CRLFile = cfg.ClientCRLFile
	if len(cfg.ListenCipherSuites) > 0 {
		cs, err := tlsutil.GetCipherSuites(cfg.ListenCipherSuites)
		if err != nil {
			return nil, fmt.Errorf("--listen-cipher-suites: %w", err)
		}
		info.CipherSuites = cs
	}
	var err error
	if info.MinVersion, err = tlsutil.GetTLSVersion(cfg.TLSMinVersion); err != nil {
		return nil, fmt.Errorf("--tls-min-version: %w", err)
	}
	if info.MaxVersion, err = tlsutil.GetTLSVersion(cfg.TLSMaxVersion); err != nil {
		return nil, fmt.Errorf("--tls-max-version: %w", err)
	}
	// Load the files now so that a missing or unreadable one stops the
	// proxy at start, naming the file, rather than failing each handshake.
	if _, err := info.ServerConfig(); err != nil {
		return nil, fmt.Errorf("TLS for clients (--cert-file/--key-file/--trusted-ca-file): %w", err)
	}
	return info, nil
}

// validateListenTLS checks the TLS version and cipher settings as etcd's
// proxy does before it starts.
func validateListenTLS(c *Config) error {
	minV, err := tlsutil.GetTLSVersion(c.TLSMinVersion)
	if err != nil {
		return fmt.Errorf("invalid --tls-min-version: %w", err)
	}
	maxV, err := tlsutil.GetTLSVersion(c.TLSMaxVersion)
	if err != nil {
		return fmt.Errorf("invalid --tls-max-version: %w", err)
	}
	if maxV != 0 && minV > maxV {
		return fmt.Errorf("--tls-min-version %s is greater than --tls-max-version %s", c.TLSMinVersion, c.TLSMaxVersion)
	}
	if minV == tls.VersionTLS13 && len(c.ListenCipherSuites) > 0 {
		return fmt.Errorf("--listen-cipher-suites cannot be set when only TLS1.3 is enabled")
	}
	return nil
}
