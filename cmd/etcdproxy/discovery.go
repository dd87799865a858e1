package main

import (
	"go.etcd.io/etcd/client/pkg/v3/srv"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
)

// discoverEndpoints finds the cluster's client endpoints from DNS SRV
// records, as etcd's grpc-proxy does with --discovery-srv: etcd's own srv
// package looks up _etcd-client-ssl._tcp and _etcd-client._tcp under
// domain (with -serviceName appended when set). Unless insecure, only
// https endpoints that answer a TLS handshake, checked against ca with
// domain as the server name, are kept; an empty result leaves --endpoints
// in force, as in etcd. A domain without either record is an error (etcd
// prints it and exits).
func discoverEndpoints(lg *zap.Logger, domain, ca string, insecure bool, serviceName string) ([]string, error) {
	srvs, err := srv.GetClient("etcd-client", domain, serviceName)
	if err != nil {
		return nil, err
	}
	endpoints := srvs.Endpoints
	lg.Info("discovered cluster from SRV", zap.String("srv-server", domain), zap.Strings("endpoints", endpoints))
	if insecure {
		return endpoints, nil
	}
	valid, err := transport.ValidateSecureEndpoints(transport.TLSInfo{TrustedCAFile: ca, ServerName: domain}, endpoints)
	if err != nil {
		lg.Warn("failed to validate discovered endpoints", zap.String("srv-server", domain), zap.Strings("endpoints", valid), zap.Error(err))
	} else {
		lg.Info("using validated discovered SRV endpoints", zap.String("srv-server", domain), zap.Strings("endpoints", valid))
	}
	return valid, nil
}
