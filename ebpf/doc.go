// Package ebpf is the live observer: tc/tcx programs on the edge
// interfaces that classify every packet, track IP fragment trains and send
// IKE control messages to user space, plus a kfree_skb program that reports
// drop reasons. It emits the same obs.Record values as the capture reader.
package ebpf
