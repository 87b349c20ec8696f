// Command proxyrun runs the proxy alone, for the namespace lab tests, the
// demo and the benchmark: the configuration is the daemon's YAML (the
// proxy and keys sections, read with viper as the daemon reads them), and
// a Unix socket serves /stats, /status, /peers, /flows (JSON) and /metrics.
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/viper"

	"github.com/ikefrag/ikefrag/proxy"
)

func main() {
	cfgPath := flag.String("config", "", "YAML file with proxy and keys sections")
	ctl := flag.String("ctl", "", "Unix socket serving /stats, /peers, /flows and /metrics")
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ks, err := proxy.OpenKeys(ctx, cfg.Keys, log)
	if err != nil {
		return err
	}
	defer ks.Close()
	p, err := proxy.New(cfg.Proxy, proxy.Deps{Keys: ks.Source(), Logger: log})
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
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(ln, mux) }()
	}
	fmt.Println("ready") // the lab waits for this line
	return p.Run(ctx)
}
