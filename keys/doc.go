// Package keys supplies IKE SA keys (SK_ei, SK_er, SK_ai, SK_ar and the
// suite) to the re-fragmenting proxy, by SPIi and SPIr, through one
// interface, Source. Store implements it; two producers fill it:
//
//   - SaveKeys follows strongSwan's save-keys output, the Wireshark
//     "ikev2_decryption_table" format:
//
//     SPIi,SPIr,SK_ei,SK_er,"<encryption>",SK_ai,SK_ar,"<integrity>"
//
//     e.g. `0d9231365d81f170,5465b4ff8a07696d,99…a6,c7…02,"AES-CBC-256 [RFC3602]",0e…8e,dd…c3,"HMAC_SHA2_256_128 [RFC4868]"`.
//     The last line for an SPI pair wins. The file is followed as it grows
//     (inotify, with polling as a fallback, and on a lookup miss); when it
//     is truncated or replaced it is read again from the start.
//
//   - Socket takes keys over a Unix socket: from strongSwan through the
//     ikefrag-keys plugin (keys/strongswan-plugin, docs/keys.md) or from
//     other IKE daemons.
//
//   - Remote takes the same messages over mutually authenticated TLS 1.3
//     from Forwarders on VPN server hosts (docs/key-forwarder.md).
//
// # Key socket protocol
//
// The socket is created with mode 0600 in a directory that must be owned
// by the daemon's user with mode 0700; connections from users other than
// root and the daemon's own user are refused (SO_PEERCRED), or, when
// SocketConfig.PeerUIDs is set, from any uid not listed there (charon's). A client
// writes one JSON object per line, one per IKE SA, and reads one reply line
// per object: {"ok":true} or {"ok":false,"error":"<reason>"}. Bad objects
// are answered, counted and skipped; the connection stays open (except
// after a line longer than 16 KiB).
//
// Members of an object (any other member is an error):
//
//	spi_i     string  SPIi, 16 hex digits (network order, optional 0x)   required
//	spi_r     string  SPIr, 16 hex digits                                 required
//	delete    bool    true: forget the IKE SA and wipe its keys; nothing else is needed
//	server    string  the address of the VPN server whose IKE daemon holds the SA
//	                  (the proxy's backend address); required by the key listener
//	                  (keys.listen), which checks it against the client's backends;
//	                  optional on the Unix socket
//	old_spi_i string  with old_spi_r: this SA replaced the IKE SA old_spi_i/old_spi_r
//	old_spi_r string  (IKE SA rekey, RFC 7296 §2.18); keys may come in the same
//	                  object or their own; the proxy then treats the new SPIs
//	                  as the same client's IKE SA
//	encr      string  encryption transform: IANA name with or without ENCR_
//	                  ("AES_CBC", "ENCR_AES_GCM_16", "CHACHA20_POLY1305", "3DES")
//	                  or its number ("12", or a JSON number)
//	key_bits  number  cipher key length without salt: 128, 192, 256 for AES
//	                  (192 for 3DES and 256 for ChaCha20-Poly1305 if omitted)
//	integ     string  integrity transform, IANA name with or without AUTH_
//	                  ("HMAC_SHA2_256_128") or its number ("12", or a JSON
//	                  number); "", 0 or omitted for AEAD suites
//	frag      bool    both peers sent IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT
//	                  (RFC 7383 §2.3), as the IKE daemon concluded; lets the proxy
//	                  cut messages of SAs whose IKE_SA_INIT it did not see
//	                  (it restarted, or the SA came from a rekey)
//	t         number  when the keys were derived, Unix time in nanoseconds
//	                  (optional; for delivery latency)
//	tq        number  when the writer queued the message for its sending thread,
//	                  Unix time in nanoseconds (optional; latency by stage)
//	tw        number  when the writer wrote it to the socket, likewise
//	rq        number  nanoseconds the writer's sending thread was runnable but
//	                  had no CPU before writing it (optional)
//	sk_ei     string  SK_ei in hex; for AEAD suites the key followed by the salt
//	                  (4 bytes for AES-GCM and ChaCha20-Poly1305)
//	sk_er     string  SK_er in hex
//	sk_ai     string  SK_ai in hex; "" for AEAD suites
//	sk_ar     string  SK_ar in hex; "" for AEAD suites
//
// Example:
//
//	{"spi_i":"0d9231365d81f170","spi_r":"5465b4ff8a07696d","encr":"AES_GCM_16","key_bits":256,
//	 "sk_ei":"<72 hex digits>","sk_er":"<72 hex digits>","sk_ai":"","sk_ar":"","delete":false}
//
// The messages of one IKE SA's life, as the strongSwan plugin sends them:
//
//	{"spi_i":"…","spi_r":"…","encr":12,"key_bits":256,"integ":12,"frag":true,"t":1764900000123456789,"sk_ei":"…","sk_er":"…","sk_ai":"…","sk_ar":"…"}
//	{"spi_i":"<new>","spi_r":"<new>","old_spi_i":"…","old_spi_r":"…"}   after an IKE SA rekey
//	{"spi_i":"…","spi_r":"…","delete":true}                             when charon destroys the SA
//
// A writer that reconnects re-sends the keys (and links) of every IKE SA
// still alive; a repeated object replaces the earlier one.
//
// A suite the engine has no cipher for is recorded as known but
// unsupported: lookups report it (the proxy then relays without keys).
//
// # Secrets
//
// Key files, key directories and the socket are refused unless owned by
// the running user and closed to group and others; the error names the
// path and the chmod or chown that fixes it. Keys are wiped when an SA is
// deleted, replaced or expires, and the key types redact themselves in
// every formatting path (fmt, encoding/json, log/slog). Input buffers that
// held key text are wiped after parsing.
package keys
