// Command proxyrun runs the proxy alone, for the namespace lab tests, the
// demo and the benchmark: the configuration is the daemon's YAML (the
// proxy and keys sections, read with viper as the daemon reads them,
// keys.listen included), and a Unix socket serves /stats, /status,
// /peers, /flows, /keys (JSON) and /metrics.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/viper"

	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/proxy"
)

func main() {
	cfgPath := flag.String("config", "", "YAML file with proxy and keys sections")
	ctl := flag.String("ctl", "", "Unix socket serving /stats, /status, /peers, /flows, /keys and /metrics")
	level := flag.String("log", "info", "log level: debug, info, warn")
	flag.Parse()
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	if err := run(*cfgPath, *ctl, log); err != nil {
		log.Error("proxyrun", "err", err)
		os.Exit(1)
	}
}

func run(cfgPath, ctl string, log *slog.Logger) error {
	v := viper.New()
	v.SetConfigFile(cfgPath)
	if err := v.ReadInConfig(); err != nil {
		return err
	}
	var cfg struct {
		Proxy proxy.Config     `mapstructure:"proxy"`
		Keys  proxy.KeysConfig `mapstructure:"keys"`
	}
	if err := v.Unmarshal(&cfg); err != nil {
		return err
	}
	listen := keysListen{TLS: true} // ikefragd's default: TLS unless said otherwise
	if err := v.UnmarshalKey("keys.listen", &listen); err != nil {
		return fmt.Errorf("keys.listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ks, err := proxy.OpenKeys(ctx, cfg.Keys, log)
	if err != nil {
		return err
	}
	defer ks.Close()
	var store *keys.Store
	if ks != nil {
		store = ks.Store
	}
	var remote *keys.Remote
	if listen.Address != "" {
		if store == nil {
			// the listener is the only key source: a store of its own,
			// wiped on the way out as OpenKeys' is
			store = keys.NewStore(keys.StoreConfig{})
			go store.Run(ctx, 0)
			defer store.Clear()
		}
		if remote, err = listen.open(store, log); err != nil {
			return err
		}
		defer remote.Close()
		go func() { _ = remote.Serve(ctx) }()
	}
	deps := proxy.Deps{Logger: log}
	if store != nil {
		deps.Keys = store // a nil *Store would be a non-nil keys.Source
	}
	p, err := proxy.New(cfg.Proxy, deps)
	if err != nil {
		return err
	}
	if ctl != "" {
		_ = os.Remove(ctl)
		ln, err := net.Listen("unix", ctl)
		if err != nil {
			p.Close()
			return err
		}
		defer ln.Close()
		reg := prometheus.NewRegistry()
		reg.MustRegister(p.Collector())
		if remote != nil {
			reg.MustRegister(remote.Collector())
		}
		mux := http.NewServeMux()
		js := func(f func() any) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				e := json.NewEncoder(w)
				e.SetIndent("", "  ")
				_ = e.Encode(f())
			}
		}
		mux.Handle("/stats", js(func() any { return p.Stats() }))
		mux.Handle("/status", js(func() any { return p.Status() }))
		mux.Handle("/peers", js(func() any { return p.Peers() }))
		mux.Handle("/flows", js(func() any { return p.Flows() }))
		mux.Handle("/keys", js(func() any { return keysStatus(store, remote) }))
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(ln, mux) }()
	}
	fmt.Println("ready") // the lab waits for this line
	return p.Run(ctx)
}

// keysListen is ikefragd's keys.listen (cmd/ikefragd/internal/config,
// which this command may not import), read and checked the same way.
type keysListen struct {
	Address  string   `mapstructure:"address"`
	Cert     string   `mapstructure:"cert"`
	Key      string   `mapstructure:"key"`
	ClientCA string   `mapstructure:"client_ca"`
	TLS      bool     `mapstructure:"tls"`
	Clients  []string `mapstructure:"clients"`
}

func (l keysListen) open(store *keys.Store, log *slog.Logger) (*keys.Remote, error) {
	rc := keys.RemoteConfig{Address: l.Address, CertFile: l.Cert, KeyFile: l.Key, ClientCAFile: l.ClientCA,
		Insecure: !l.TLS, Logger: log}
	for _, c := range l.Clients {
		cl, err := keys.ParseRemoteClient(c)
		if err != nil {
			return nil, fmt.Errorf("keys.listen.clients: %q: %w", c, err)
		}
		rc.Clients = append(rc.Clients, cl)
	}
	r, err := keys.ListenRemote(store, rc)
	if err != nil {
		return nil, fmt.Errorf("keys.listen: %w", err)
	}
	return r, nil
}

// keySA is one SA of the key store as /keys shows it: SPIs, never keys.
type keySA struct {
	SPIi      string    `json:"spi_i"`
	SPIr      string    `json:"spi_r"`
	Suite     string    `json:"suite"`
	Supported bool      `json:"supported"`
	Origin    string    `json:"origin"`
	Added     time.Time `json:"added"`
}

// keysView is /keys: the store's counters and SAs, and the key
// listener's counters when keys.listen is on.
type keysView struct {
	Store    *keys.StoreStats  `json:"store,omitempty"`
	SAs      []keySA           `json:"sas"`
	Listener *keys.RemoteStats `json:"listener,omitempty"`
}

func keysStatus(store *keys.Store, remote *keys.Remote) keysView {
	v := keysView{SAs: []keySA{}}
	if store != nil {
		st := store.Stats()
		v.Store = &st
		for _, in := range store.List() {
			v.SAs = append(v.SAs, keySA{SPIi: in.SPIi.String(), SPIr: in.SPIr.String(), Suite: in.Suite,
				Supported: in.Supported, Origin: in.Origin, Added: in.Added})
		}
	}
	if remote != nil {
		st := remote.Stats()
		v.Listener = &st
	}
	return v
}
