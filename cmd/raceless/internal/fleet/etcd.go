package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Etcd is a single-node etcd server run in this process (package embed):
// `raceless fleet etcd` for trying a fleet on one machine, and the tests'
// and the benchmark's etcd. It is not a production deployment: one member,
// no TLS, no authentication.
type Etcd struct {
	// Endpoint is the client URL to give clientv3 (and --etcd).
	Endpoint string
	cfg      *embed.Config
	e        *embed.Etcd
	level    zap.AtomicLevel
	log      *zap.Logger
}

// EtcdConfig configures StartEtcd.
type EtcdConfig struct {
	// DataDir holds the member's data; an existing one is reopened (a
	// restart keeps the keys).
	DataDir string
	// Client is where clients connect: "HOST:PORT" (TCP) or an absolute
	// path (a unix socket). "" is a unix socket in DataDir.
	Client string
	// Peer is the peer listener's "HOST:PORT" (etcd always listens for
	// peers, even alone); "" picks a free loopback port.
	Peer string
	// LogLevel is etcd's own log level (default "error").
	LogLevel string
}

// StartEtcd starts a single-node etcd and waits until it serves clients.
// A peer port picked by StartEtcd that another process takes between the
// pick and the listen is picked again (up to five times).
func StartEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("etcd: no data directory: %w", ErrInvalid)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	client := cfg.Client
	if client == "" {
		client = filepath.Join(cfg.DataDir, "client.sock")
	}
	var curl url.URL
	if strings.HasPrefix(client, "/") {
		curl = url.URL{Scheme: "unix", Path: client}
		os.Remove(client) // a socket left by a stopped server
	} else {
		curl = url.URL{Scheme: "http", Host: client}
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		peer := cfg.Peer
		if peer == "" {
			p, err := freePort()
			if err != nil {
				return nil, fmt.Errorf("etcd: %w", err)
			}
			peer = p
		}
		ec := embed.NewConfig()
		ec.Name = "raceless"
		ec.Dir = cfg.DataDir
		// etcd's own log, at an atomic level: Close silences it first,
		// as its shutdown logs its listeners closing as errors.
		level := zap.NewAtomicLevelAt(zap.ErrorLevel)
		if cfg.LogLevel != "" {
			if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
				return nil, fmt.Errorf("etcd: log level %q: %w", cfg.LogLevel, ErrInvalid)
			}
		}
		zc := zap.NewProductionConfig()
		zc.Level = level
		lg, err := zc.Build()
		if err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
		ec.ListenClientUrls = []url.URL{curl}
		ec.AdvertiseClientUrls = []url.URL{curl}
		purl := url.URL{Scheme: "http", Host: peer}
		ec.ListenPeerUrls = []url.URL{purl}
		ec.AdvertisePeerUrls = []url.URL{purl}
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
		// Old revisions (every status report is one) are compacted
		// hourly; see docs/fleet.md.
		ec.AutoCompactionMode = "periodic"
		ec.AutoCompactionRetention = "1h"
		e, err := embed.StartEtcd(ec)
		if err != nil {
			lg.Sync()
			lastErr = err
			if cfg.Peer == "" && isAddrInUse(err) {
				continue
			}
			return nil, fmt.Errorf("etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("etcd: %w", err)
		case <-time.After(time.Minute): // a limit on a hang, not a synchronisation
			e.Close()
			return nil, fmt.Errorf("etcd: not ready after a minute")
		}
		ep := curl.String()
		if curl.Scheme == "unix" {
			ep = "unix://" + curl.Path
		}
		return &Etcd{Endpoint: ep, cfg: ec, e: e, level: level, log: lg}, nil
	}
	return nil, fmt.Errorf("etcd: %w", lastErr)
}

// Err is the server's fatal error, if it stops on its own.
func (s *Etcd) Err() <-chan error { return s.e.Err() }

// Close stops the server (clients see it unreachable) and waits for it.
// Its log is silenced first: etcd logs its own listeners closing as
// errors.
func (s *Etcd) Close() {
	s.level.SetLevel(zap.FatalLevel)
	s.e.Close()
	s.log.Sync()
}

func isAddrInUse(err error) bool {
	return strings.Contains(err.Error(), "address already in use")
}

// freePort returns a loopback "HOST:PORT" nothing listens on now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Traffic counts the requests a client sends and the bytes (protobuf
// sizes) both ways: the unary calls (KV, lease grants, transactions) and
// the streams' messages (watch events, lease keepalives). Safe for
// concurrent use.
type Traffic struct {
	Requests atomic.Int64 // unary calls and stream messages sent
	Sent     atomic.Int64 // bytes sent
	Received atomic.Int64 // bytes received
}

func msgSize(m any) int64 {
	if pm, ok := m.(proto.Message); ok {
		return int64(proto.Size(pm))
	}
	return 0
}

// DialOptions returns the gRPC options that count a client's traffic in t.
func (t *Traffic) DialOptions() []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		t.Requests.Add(1)
		t.Sent.Add(msgSize(req))
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil {
			t.Received.Add(msgSize(reply))
		}
		return err
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &countedStream{ClientStream: s, t: t}, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

type countedStream struct {
	grpc.ClientStream
	t *Traffic
}

func (s *countedStream) SendMsg(m any) error {
	s.t.Requests.Add(1)
	s.t.Sent.Add(msgSize(m))
	return s.ClientStream.SendMsg(m)
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.t.Received.Add(msgSize(m))
	}
	return err
}

// Dial connects a client to endpoints (comma-separated URLs or
// HOST:PORTs). It does not wait for a connection: the first request does
// (bounded by its context). t, when not nil, counts the traffic.
func Dial(endpoints string, t *Traffic) (*clientv3.Client, error) {
	var eps []string
	for _, ep := range strings.Split(endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("etcd: no endpoint given: %w", ErrInvalid)
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// A keepalive that notices a dead server, so that watches
		// resume and leases are renewed soon after it comes back.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if t != nil {
		cfg.DialOptions = t.DialOptions()
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", endpoints, errors.Join(ErrUnreachable, err))
	}
	return cli, nil
}
