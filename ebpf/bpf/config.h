/* Per-instance configuration, written by the loader into .rodata before
 * the programs are loaded. Being read-only constants, the verifier prunes
 * the branches they disable and the JIT sees immediates. */
#ifndef IKEFRAG_CONFIG_H
#define IKEFRAG_CONFIG_H

/* Ports in network byte order so the fast path compares without swapping. */
volatile const __u16 cfg_ike_port_be = bpf_htons(500);
volatile const __u16 cfg_natt_port_be = bpf_htons(4500);
/* UDP payload bytes copied into each datagram event (clamped to CAPTURE_MAX). */
volatile const __u32 cfg_capture_len = 1500;
/* IKE messages whose header length exceeds this are counted as large. */
volatile const __u32 cfg_large_ike = 1280;
/* Counter slot of the interface this instance is attached to. */
volatile const __u32 cfg_slot = 0;
/* Interface index reported in events (the program may be tested unattached). */
volatile const __u32 cfg_ifindex = 0;
/* Set for interfaces without an Ethernet header (tun, ppp, wireguard). */
volatile const __u8 cfg_no_eth = 0;

#endif
