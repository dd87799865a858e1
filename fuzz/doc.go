// Package fuzz holds `go test -fuzz` targets for the proxy's pure code (the
// packages under core) and for its answers to every unary RPC. It has no
// non-test code of its own. FuzzFragments lives beside the code it checks,
// in core/watch, because it needs the watch machine's unexported splitter
// and reassembler.
//
// Under a plain `go test ./fuzz` each target runs only its seed corpus (the
// f.Add calls plus any testdata/fuzz regression inputs), so the targets are
// part of the ordinary test run. To fuzz one target, name it and give a time
// budget; go test fuzzes a single target per run:
//
//	go test ./fuzz -run=^$ -fuzz=FuzzNode -fuzztime=30s
//	go test ./fuzz -run=^$ -fuzz=FuzzNamespaceRange -fuzztime=30s
//	go test ./fuzz -run=^$ -fuzz=FuzzNamespaceTxn -fuzztime=30s
//	go test ./fuzz -run=^$ -fuzz=FuzzNamespaceResponses -fuzztime=30s
//	go test ./fuzz -run=^$ -fuzz=FuzzRequests -fuzztime=30s
//
// FuzzNode drives the whole composite core (package node) with input
// sequences decoded from bytes and checks that everything is released once
// every stream closes; the namespace targets check that no input maps
// outside the prefix and that stripping inverts prefixing, and
// FuzzNamespaceResponses that nothing outside the prefix reaches a client
// in a watch response or a lease's keys. FuzzRequests sends any request
// bytes to every unary RPC through a proxy and straight to a second etcd
// member given the same calls, and requires equal answers. CI (.ci/run)
// fuzzes each target for 20 s.
//
// A failing input is written to testdata/fuzz/<Target>/ and replayed by every
// later `go test ./fuzz`; keep it there as a regression test once the bug it
// found is fixed.
package fuzz
