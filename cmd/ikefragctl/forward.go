package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ikefrag/ikefrag/keys"
)

// newKeysCmd is `ikefragctl keys`: the key forwarder of a VPN server host.
func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "IKE SA key feed tools"}
	cmd.AddCommand(newForwardCmd())
	return cmd
}

func newForwardCmd() *cobra.Command {
	var cfg keys.ForwarderConfig
	uid := -1
	cmd := &cobra.Command{
		Use:   "forward --socket PATH --to HOST:PORT [--to HOST:PORT] --cert FILE --key FILE --ca FILE",
		Short: "Forward the IKE daemon's key feed to the key listeners of one or more proxies over TLS 1.3",
		Long: `forward runs on a VPN server host. The IKE daemon's key plugin (strongSwan's
ikefrag-keys) writes to --socket; every message goes, over mutually
authenticated TLS 1.3, to each proxy's key listener (ikefragd keys.listen).
The keys of live IKE SAs are held in memory only, and sent again to a proxy
that reconnects. See docs/key-forwarder.md.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg.AllowUID = uid
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			f, err := keys.NewForwarder(cfg)
			if err != nil {
				return badInput("%v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			cfg.Logger.Info("key forwarder running", "socket", f.Path(), "targets", cfg.Targets)
			if err := f.Run(ctx); err != nil {
				return fmt.Errorf("key forwarder: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Socket, "socket", "/run/ikefrag-keys/keys.sock", "Unix socket the key plugin connects to (its directory private to this user)")
	fl.StringArrayVar(&cfg.Targets, "to", nil, "a proxy's key listener, HOST:PORT (repeat for each box of a pair)")
	fl.StringVar(&cfg.CertFile, "cert", "", "this forwarder's client certificate (PEM)")
	fl.StringVar(&cfg.KeyFile, "key", "", "its private key (PEM, private to this user)")
	fl.StringVar(&cfg.CAFile, "ca", "", "CA certificates (PEM) that sign the listeners' certificates")
	fl.StringVar(&cfg.ServerName, "server-name", "", "name the listeners' certificates must carry (default: the target's host)")
	fl.BoolVar(&cfg.Insecure, "insecure", false, "no TLS: loopback targets only")
	fl.IntVar(&uid, "allow-uid", -1, "a uid allowed to connect besides root and this user (charon's, when unprivileged)")
	return cmd
}
