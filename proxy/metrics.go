package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
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
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDatagrams, descBytes, descRefrag, descFragments, descReplays,
		descKeyMisses, descNotNeg, descOversize, descStepDowns, descRetransmits, descDropped, descDroppedGlobal,
		descUp, descFlows, descClients, descSAs, descRoutes, descICMP, descClientPMTU, descClientCtr} {
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
		for r := DropReason(0); r < numDropReasons; r++ {
			counter(descDropped, k.Dropped[r.String()], b.Name, r.String())
			placed[r.String()] += k.Dropped[r.String()]
		}
		up := 0.0
		if b.Up {
			up = 1
		}
		gauge(descUp, up, b.Name)
		gauge(descFlows, float64(b.Flows), b.Name)
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		counter(descDroppedGlobal, st.Total.Dropped[r.String()]-min(placed[r.String()], st.Total.Dropped[r.String()]), r.String())
	}
	gauge(descClients, float64(st.Clients))
	gauge(descSAs, float64(st.IKESAs))
	gauge(descRoutes, float64(st.Routes))
	counter(descICMP, st.ICMPErrors)
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
			{"step_downs", k.StepDowns}, {"oversize_relayed", k.Oversize}} {
			counter(descClientCtr, e.v, a, e.n)
		}
	}
}
