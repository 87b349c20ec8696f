package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ikefrag/ikefrag/ebpf/fastpath"
)

// Collector exports the proxy's counters to Prometheus. Per-client series
// appear only with proxy.metrics_per_client (bounded by max_clients).
type Collector struct {
	p *Proxy
}

// Collector returns a prometheus.Collector for the proxy; the daemon
// registers it.
func (p *Proxy) Collector() prometheus.Collector { return &Collector{p: p} }

const ns = "ikefrag_proxy_"

var (
	descDatagrams     = prometheus.NewDesc(ns+"datagrams_total", "Datagrams relayed, by backend and direction (in: client to backend, out: to the client).", []string{"backend", "direction"}, nil)
	descBytes         = prometheus.NewDesc(ns+"bytes_total", "UDP payload bytes relayed, by backend and direction.", []string{"backend", "direction"}, nil)
	descRefrag        = prometheus.NewDesc(ns+"refragmented_messages_total", "Server-to-client IKE messages re-cut into RFC 7383 fragments for the client's path MTU.", []string{"backend"}, nil)
	descFragments     = prometheus.NewDesc(ns+"fragments_emitted_total", "SKF fragments emitted by re-fragmentation and step-downs.", []string{"backend"}, nil)
	descReplays       = prometheus.NewDesc(ns+"replays_total", "Backend retransmissions answered with the cached fragments, byte for byte.", []string{"backend"}, nil)
	descKeyMisses     = prometheus.NewDesc(ns+"key_misses_total", "Messages that needed re-fragmentation but whose IKE SA keys were not available (relayed unchanged).", []string{"backend"}, nil)
	descNotNeg        = prometheus.NewDesc(ns+"not_negotiated_total", "Messages that needed re-fragmentation on IKE SAs without IKEV2_FRAGMENTATION_SUPPORTED from both peers.", []string{"backend"}, nil)
	descOversize      = prometheus.NewDesc(ns+"oversize_relayed_total", "Datagrams relayed unchanged although larger than the client's path MTU.", []string{"backend"}, nil)
	descStepDowns     = prometheus.NewDesc(ns+"step_downs_total", "Responses cut again in smaller fragments after a client retransmission (responder-side IKE PMTU discovery).", []string{"backend"}, nil)
	descRetransmits   = prometheus.NewDesc(ns+"client_retransmits_total", "Client IKE requests seen again with the same message ID and bytes.", []string{"backend"}, nil)
	descDropped       = prometheus.NewDesc(ns+"dropped_total", "Datagrams not forwarded, by reason (reassembly_hold and retransmit_suppressed are not losses).", []string{"backend", "reason"}, nil)
	descDroppedGlobal = prometheus.NewDesc(ns+"dropped_unplaced_total", "Datagrams dropped before a backend was chosen, by reason.", []string{"reason"}, nil)
	descUp            = prometheus.NewDesc(ns+"backend_up", "1 when the backend takes new IKE SAs.", []string{"backend"}, nil)
	descFlows         = prometheus.NewDesc(ns+"flows", "Client flows, by backend.", []string{"backend"}, nil)
	descClients       = prometheus.NewDesc(ns+"clients", "Client addresses with state.", nil, nil)
	descSAs           = prometheus.NewDesc(ns+"ike_sas", "IKE SAs tracked.", nil, nil)
	descRoutes        = prometheus.NewDesc(ns+"routes", "Host routes with a locked MTU installed (route_mtu).", nil, nil)
	descICMP          = prometheus.NewDesc(ns+"icmp_errors_total", "ICMP errors received on client-facing sockets.", nil, nil)
	descClientPMTU    = prometheus.NewDesc(ns+"client_pmtu_bytes", "Path MTU estimate toward a client.", []string{"client", "source"}, nil)
	descClientCtr     = prometheus.NewDesc(ns+"client_events_total", "Per-client counters (metrics_per_client).", []string{"client", "event"}, nil)
	descESP           = prometheus.NewDesc(ns+"esp_datagrams_total", "ESP-in-UDP datagrams relayed, by backend, direction and path (user_space: the proxy's sockets; fast_path: the kernel), included in datagrams_total.", []string{"backend", "direction", "path"}, nil)
	descFlowEnds      = prometheus.NewDesc(ns+"flows_ended_total", "Client flows ended, by reason (idle, unanswered, half_open, evicted_unanswered, evicted_half_open, tcp_closed).", []string{"reason"}, nil)
	descUnestablished = prometheus.NewDesc(ns+"flows_unestablished", "Client flows the backend has not answered beyond IKE_SA_INIT (the ones new flows may evict).", nil, nil)
	descHalfOpen      = prometheus.NewDesc(ns+"half_open_ike_sas", "IKE SAs whose IKE_SA_INIT was answered and IKE_AUTH not yet (half_open_per_client applies per client).", nil, nil)
	descProbes        = prometheus.NewDesc(ns+"health_probes_total", "Health probes (IKE_SA_INIT of major version 3) sent to doubted or down backends, by result.", []string{"result"}, nil)
	descCookies       = prometheus.NewDesc(ns+"cookies_total", "The proxy's own COOKIE responses (cookie mode), sent and verified (brought back valid).", []string{"result"}, nil)
	descAdopted       = prometheus.NewDesc(ns+"flows_adopted_total", "Flows of the state file re-opened at start (adopted) or left out (skipped).", []string{"result"}, nil)
	descDoubt         = prometheus.NewDesc(ns+"backend_doubt", "Distinct client addresses whose IKE_SA_INIT the backend left unanswered since it last answered.", []string{"backend"}, nil)
	descVIPHeld       = prometheus.NewDesc(ns+"vip_held", "1 when this host holds the listen address (proxy.freebind; in a pair, 1 on the active box).", []string{"address"}, nil)
	descVIPChanges    = prometheus.NewDesc(ns+"vip_changes_total", "Arrivals and departures of the listen address on this host since the start (proxy.freebind).", []string{"address"}, nil)
	descPairAdopted   = prometheus.NewDesc(ns+"pair_adopted_total", "Datagrams of SAs without a flow that proxy.adopt admitted, by kind (ike, esp), or refused for an SPI pair the key source did not know (unknown_sa).", []string{"kind"}, nil)
	descESPBytes      = prometheus.NewDesc(ns+"esp_bytes_total", "UDP payload bytes of ESP-in-UDP relayed, by backend, direction and path, included in bytes_total.", []string{"backend", "direction", "path"}, nil)

	descFPActive     = prometheus.NewDesc(fpns+"active", "1 when the ESP fast path is loaded and attached (proxy.fast_path auto).", nil, nil)
	descFPFlows      = prometheus.NewDesc(fpns+"flows", "NAT-T flows mapped in the ESP fast path.", nil, nil)
	descFPMax        = prometheus.NewDesc(fpns+"max_flows", "Flows the ESP fast path can map at once.", nil, nil)
	descFPRedirected = prometheus.NewDesc(fpns+"redirected_total", "ESP datagrams relayed by the fast path.", nil, nil)
	descFPPassed     = prometheus.NewDesc(fpns+"passed_total", "Datagrams the fast path left to the stack, by reason.", []string{"reason"}, nil)
	descFPDropped    = prometheus.NewDesc(fpns+"dropped_total", "Datagrams the fast path dropped half way through a rewrite.", nil, nil)
	descFPMapFull    = prometheus.NewDesc(fpns+"map_full_total", "Flows refused for lack of room (relayed in user space).", nil, nil)
	descFPPutErrors  = prometheus.NewDesc(fpns+"put_errors_total", "Flows refused for another reason (relayed in user space).", nil, nil)
	descFPUnmapped   = prometheus.NewDesc(fpns+"unmapped_flows_total", "NAT-T flows left in user space when offered to the fast path.", nil, nil)
	descFPAttach     = prometheus.NewDesc(fpns+"attach_failures_total", "Interfaces the fast path could not be attached to.", nil, nil)
	descFPLoad       = prometheus.NewDesc(fpns+"load_failures_total", "Failed loads of the fast path program.", nil, nil)
)

const fpns = "ikefrag_fastpath_"

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDatagrams, descBytes, descRefrag, descFragments, descReplays,
		descKeyMisses, descNotNeg, descOversize, descStepDowns, descRetransmits, descDropped, descDroppedGlobal,
		descUp, descFlows, descClients, descSAs, descRoutes, descICMP, descClientPMTU, descClientCtr, descESP, descESPBytes,
		descFlowEnds, descUnestablished, descHalfOpen, descProbes, descDoubt, descCookies, descAdopted,
		descVIPHeld, descVIPChanges, descPairAdopted,
		descFPActive, descFPFlows, descFPMax, descFPRedirected, descFPPassed, descFPDropped, descFPMapFull, descFPPutErrors,
		descFPUnmapped, descFPAttach, descFPLoad} {
		ch <- d
	}
	for _, d := range tcpDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	placed := map[string]uint64{}
	for _, b := range st.Backends {
		k := b.Counters
		counter(descDatagrams, k.DatagramsIn, b.Name, "in")
		counter(descDatagrams, k.DatagramsOut, b.Name, "out")
		counter(descBytes, k.BytesIn, b.Name, "in")
		counter(descBytes, k.BytesOut, b.Name, "out")
		counter(descRefrag, k.Refragmented, b.Name)
		counter(descFragments, k.FragmentsEmitted, b.Name)
		counter(descReplays, k.Replays, b.Name)
		counter(descKeyMisses, k.KeyMisses, b.Name)
		counter(descNotNeg, k.NotNegotiated, b.Name)
		counter(descOversize, k.Oversize, b.Name)
		counter(descStepDowns, k.StepDowns, b.Name)
		counter(descRetransmits, k.ClientRetransmits, b.Name)
		for _, e := range []struct {
			dir, path   string
			pkts, bytes uint64
		}{{"in", "user_space", k.ESPIn, k.ESPBytesIn}, {"out", "user_space", k.ESPOut, k.ESPBytesOut},
			{"in", "fast_path", k.ESPFastPathIn, k.ESPFastPathBytesIn}, {"out", "fast_path", k.ESPFastPathOut, k.ESPFastPathBytesOut}} {
			counter(descESP, e.pkts, b.Name, e.dir, e.path)
			counter(descESPBytes, e.bytes, b.Name, e.dir, e.path)
		}
		for r := DropReason(0); r < numDropReasons; r++ {
			counter(descDropped, k.Dropped[r.String()], b.Name, r.String())
			placed[r.String()] += k.Dropped[r.String()]
		}
		up := 0.0
		if b.Up {
			up = 1
		}
		gauge(descUp, up, b.Name)
		gauge(descDoubt, float64(b.Doubt), b.Name)
		gauge(descFlows, float64(b.Flows), b.Name)
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		counter(descDroppedGlobal, st.Total.Dropped[r.String()]-min(placed[r.String()], st.Total.Dropped[r.String()]), r.String())
	}
	for e := FlowEnd(0); e < numFlowEnds; e++ {
		counter(descFlowEnds, st.FlowEnds[e.String()], e.String())
	}
	gauge(descUnestablished, float64(st.Unestablished))
	gauge(descHalfOpen, float64(st.HalfOpenSAs))
	counter(descProbes, st.ProbesAnswered, "answered")
	counter(descProbes, st.Probes-min(st.ProbesAnswered, st.Probes), "unanswered")
	counter(descCookies, st.CookiesSent, "sent")
	counter(descCookies, st.CookiesVerified, "verified")
	counter(descAdopted, st.Adopted, "adopted")
	counter(descAdopted, st.AdoptSkipped, "skipped")
	for _, v := range st.Pair.VIPs {
		held := 0.0
		if v.Held {
			held = 1
		}
		gauge(descVIPHeld, held, v.Address.String())
		counter(descVIPChanges, v.Changes, v.Address.String())
	}
	counter(descPairAdopted, st.Pair.AdoptedIKE, "ike")
	counter(descPairAdopted, st.Pair.AdoptedESP, "esp")
	counter(descPairAdopted, st.Pair.AdoptUnknownSA, "unknown_sa")
	gauge(descClients, float64(st.Clients))
	gauge(descSAs, float64(st.IKESAs))
	gauge(descRoutes, float64(st.Routes))
	counter(descICMP, st.ICMPErrors)
	fp := st.FastPath
	active := 0.0
	if fp.Active {
		active = 1
	}
	gauge(descFPActive, active)
	gauge(descFPFlows, float64(fp.Flows))
	gauge(descFPMax, float64(fp.MaxFlows))
	counter(descFPRedirected, fp.Redirected)
	for _, r := range fastpath.PassReasons() {
		counter(descFPPassed, fp.Passed[r.String()], r.String())
	}
	counter(descFPDropped, fp.Dropped)
	counter(descFPMapFull, fp.MapFull)
	counter(descFPPutErrors, fp.PutErrors)
	counter(descFPUnmapped, fp.Unmapped)
	counter(descFPAttach, fp.AttachFailures)
	counter(descFPLoad, fp.LoadFailures)
	collectTCP(st.TCP, ch)
	if !c.p.s.MetricsPerClient {
		return
	}
	for _, pi := range c.p.Peers() {
		a := pi.Client.String()
		gauge(descClientPMTU, float64(pi.PMTU.MTU), a, pi.PMTU.Source)
		k := pi.Counters
		for _, e := range []struct {
			n string
			v uint64
		}{{"datagrams_in", k.DatagramsIn}, {"datagrams_out", k.DatagramsOut}, {"refragmented", k.Refragmented},
			{"fragments_emitted", k.FragmentsEmitted}, {"replays", k.Replays}, {"key_misses", k.KeyMisses},
			{"step_downs", k.StepDowns}, {"oversize_relayed", k.Oversize},
			{"esp_in", k.ESPIn}, {"esp_out", k.ESPOut}, {"esp_fastpath_in", k.ESPFastPathIn}, {"esp_fastpath_out", k.ESPFastPathOut}} {
			counter(descClientCtr, e.v, a, e.n)
		}
	}
}
