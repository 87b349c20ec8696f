package proxy

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ikefrag/ikefrag/keys"
)

// KeysConfig is the keys section of the daemon's configuration (the keys
// under "keys"): where IKE SA keys come from.
type KeysConfig struct {
	// StrongswanTable is the path of strongSwan save-keys'
	// ikev2_decryption_table (or its directory).
	StrongswanTable string `mapstructure:"strongswan_table"`
	// Socket is the path of the key socket other IKE daemons write to.
	Socket string `mapstructure:"socket"`
	// SocketPeerUIDs are the uids the key socket accepts (charon's);
	// empty: root and this process's own uid.
	SocketPeerUIDs []int `mapstructure:"socket_peer_uids"`
}

// KeySources is a running key store and its producers.
type KeySources struct {
	Store    *keys.Store
	SaveKeys *keys.SaveKeys // nil without keys.strongswan_table
	Socket   *keys.Socket   // nil without keys.socket
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// OpenKeys starts the key sources cfg names; it returns nil (keyless) when
// it names none. Close stops them and wipes every key.
func OpenKeys(ctx context.Context, cfg KeysConfig, log *slog.Logger) (*KeySources, error) {
	if cfg.StrongswanTable == "" && cfg.Socket == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ks := &KeySources{Store: keys.NewStore(keys.StoreConfig{})}
	ctx, ks.cancel = context.WithCancel(ctx)
	if cfg.StrongswanTable != "" {
		sk, err := keys.NewSaveKeys(ks.Store, keys.SaveKeysConfig{Path: cfg.StrongswanTable, Logger: log})
		if err != nil {
			ks.cancel()
			return nil, err
		}
		ks.SaveKeys = sk
		ks.wg.Add(1)
		go func() { defer ks.wg.Done(); _ = sk.Run(ctx) }()
	}
	if cfg.Socket != "" {
		so, err := keys.ListenSocket(ks.Store, keys.SocketConfig{Path: cfg.Socket, PeerUIDs: cfg.SocketPeerUIDs, Logger: log})
		if err != nil {
			ks.Close()
			return nil, err
		}
		ks.Socket = so
		ks.wg.Add(1)
		go func() { defer ks.wg.Done(); _ = so.Serve(ctx) }()
	}
	ks.wg.Add(1)
	go func() { defer ks.wg.Done(); ks.Store.Run(ctx, 0) }()
	return ks, nil
}

// Source returns the store as a keys.Source, or nil for a nil KeySources
// (so that Deps.Keys stays a true nil interface when keyless).
func (ks *KeySources) Source() keys.Source {
	if ks == nil {
		return nil
	}
	return ks.Store
}

// Close stops the sources and wipes the keys.
func (ks *KeySources) Close() {
	if ks == nil {
		return
	}
	ks.cancel()
	ks.wg.Wait()
	ks.Store.Clear()
}
