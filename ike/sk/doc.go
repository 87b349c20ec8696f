// Package sk protects and unprotects IKEv2 messages with the IKE SA's keys:
// the Encrypted payload (SK, RFC 7296 §3.14, RFC 5282, RFC 7634) and the
// Encrypted Fragment payload (SKF, RFC 7383 §2.5). On top of that it splits
// a decrypted message into SKF fragments that fit a given IP datagram size
// (Fragmenter) and joins verified fragments back together (Reassembler).
//
// Integrity coverage is the one the RFCs define and deployed stacks agree
// on: for every message or fragment, the AAD (AEAD) or the MAC prefix
// (CBC with HMAC) is its own IKE header, any unprotected payloads, and the
// SK or SKF payload header. The IV and ciphertext are authenticated by the
// MAC for CBC suites and are not part of the AAD for AEAD suites. The
// non-ESP marker of UDP port 4500 is never covered.
//
// Messages from the original initiator of the IKE SA (I flag set) use
// SK_ei/SK_ai; the others use SK_er/SK_ar.
//
// # IVs
//
// Every message and fragment gets a fresh IV from crypto/rand (or the
// source a test injects). With AEAD suites the proxy encrypts under the
// original sender's key, whose own IVs it cannot see: strongSwan, for
// one, uses a per-SA counter XORed with a random mask. Random 64-bit IVs
// make a collision with any of the sender's n IVs a chance of about
// n·m/2^64 for m proxy messages; the Fragmenter keeps m small by encrypting
// each message once and answering retransmissions from its cache, and
// re-encrypts only on an explicit step-down.
//
// # Limits
//
// The Reassembler's and Fragmenter's bounds (fragment counts, message and
// buffer sizes, fragments per IKE SA, ages) are fields of their Config
// types with the defaults named there. Every message or fragment the
// Reassembler does not use is counted under a DropReason.
//
// The package does no I/O and logs nothing; key material never appears in
// errors or in formatted output.
package sk
