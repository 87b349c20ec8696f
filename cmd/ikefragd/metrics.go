package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"

	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ebpf"
)

const ns = "ikefrag"

// metrics holds the counters the daemon increments and the collector that
// reads everything else (BPF maps, engine snapshot, kernel, links) at
// scrape time.
type metrics struct {
	reg *prometheus.Registry

	verdicts              *prometheus.CounterVec
	kernelDrops           *prometheus.CounterVec
	verdictLogsSuppressed prometheus.Counter
	reloads               prometheus.Counter
	reloadFailures        prometheus.Counter
	reloadOK              prometheus.Gauge
	ifaceEvents           *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "verdicts_total",
		Help: "Verdicts by code and severity, each counted once per IKE session."}, []string{"code", "severity"})
	m.kernelDrops = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kernel_drops_total",
		Help: "IKE packets and IP fragments the kernel dropped (kfree_skb), by drop reason and kind (ike, fragment)."}, []string{"reason", "kind"})
	m.verdictLogsSuppressed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "verdict_logs_suppressed_total",
		Help: "Verdict log lines not written because of diag.verdict_log_rate."})
	m.reloads = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "config_reloads_total",
		Help: "Configuration reloads (SIGHUP) that were applied."})
	m.reloadFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "config_reload_failures_total",
		Help: "Configuration reloads refused; the running configuration stayed in place."})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "config_last_reload_successful",
		Help: "1 when the last reload (or the start) succeeded, 0 when it was refused."})
	m.reloadOK.Set(1)
	m.ifaceEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "interface_events_total",
		Help: "Interfaces attached, released, or that failed to attach."}, []string{"event"})
	// Every verdict series exists from the start, at zero: increase() and
	// rate() then see the first verdict of a code, which they would miss
	// if the series appeared with it.
	for _, v := range verdictSeries {
		m.verdicts.WithLabelValues(string(v.code), string(v.sev))
	}
	for _, v := range diag.OtherVerdicts() {
		m.verdicts.WithLabelValues(string(v.Code), string(v.Severity))
	}
	for _, c := range []prometheus.Collector{m.verdicts, m.kernelDrops, m.verdictLogsSuppressed, m.reloads, m.reloadFailures, m.reloadOK, m.ifaceEvents} {
		f(c)
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "build_info", Help: "Build of the running daemon: its version (git describe) and the Go release it was built with. Always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	bi.Set(1)
	f(bi)
	return m
}

// verdictSeries are the (code, severity) pairs the diagnosis engine gives
// (diag/verdict.go); TestVerdictSeriesMatchDiag reads that file and keeps
// this list equal to it.
var verdictSeries = []struct {
	code diag.Code
	sev  diag.Severity
}{
	{diag.FragmentsDropped, diag.Error},
	{diag.FragmentationNotNegotiated, diag.Error},
	{diag.IKEFragmentsExceedPMTU, diag.Error},
	{diag.NoProposalChosen, diag.Error},
	{diag.InvalidKEPayload, diag.Warning},
	{diag.InvalidKEPayload, diag.Info},
	{diag.WeakCrypto, diag.Warning},
	{diag.AuthenticationFailed, diag.Error},
	{diag.UnansweredSAInit, diag.Error},
	{diag.UnansweredIKEAuth, diag.Error},
	{diag.IKEv1, diag.Info},
	{diag.UnansweredIKEv1, diag.Error},
	{diag.IKEAuthNotSeen, diag.Warning},
	{diag.ESPFragmentsDropped, diag.Error},
	{diag.ESPExceedsPMTU, diag.Error},
	{diag.TCPFallback, diag.Warning},
	{diag.OK, diag.Info},
}

// counterFamily says which metric a BPF counter goes to, with which label.
type counterFamily struct {
	desc  *prometheus.Desc
	label string
	bytes bool
}

var (
	dirIface = []string{"interface", "direction"}

	descPackets = prometheus.NewDesc(ns+"_packets_total",
		"Packets the BPF programs classified, by interface, direction and class.", append(dirIface, "class"), nil)
	descBytes = prometheus.NewDesc(ns+"_bytes_total",
		"IP bytes of those packets.", append(dirIface, "class"), nil)
	descTrains = prometheus.NewDesc(ns+"_fragment_trains_total",
		"IP fragment trains started, completed, and reported incomplete after observe.fragment_timeout.", append(dirIface, "state"), nil)
	descAnomalies = prometheus.NewDesc(ns+"_fragment_anomalies_total",
		"Fragments seen twice, overlapping, after their train completed, or beyond the per-train list.", append(dirIface, "kind"), nil)
	descBPFLoss = prometheus.NewDesc(ns+"_bpf_losses_total",
		"Observations lost in the kernel: fragment-train map inserts that failed, ring-buffer reservations that failed.", append(dirIface, "cause"), nil)

	descTrainsLive = prometheus.NewDesc(ns+"_fragment_trains_live",
		"Entries in the fragment-train map at the last sweep.", nil, nil)
	descTrainsEvicted = prometheus.NewDesc(ns+"_fragment_trains_evicted_total",
		"Trains the LRU map dropped to make room before they completed or timed out.", nil, nil)
	descObsLoss = prometheus.NewDesc(ns+"_observer_losses_total",
		"Observations lost between the kernel and the diagnosis engine, by cause.", []string{"cause"}, nil)
	descDropsOtherNetns = prometheus.NewDesc(ns+"_kernel_drops_other_netns_total",
		"Kernel drop records of network namespaces that no observed interface is in, left out (observe.drops_all_namespaces: false).", nil, nil)
	descDropReports = prometheus.NewDesc(ns+"_drop_reports_total",
		"Kernel drops (kfree_skb) of IKE packets and IP fragments reported to user space.", nil, nil)
	descDropsEnabled = prometheus.NewDesc(ns+"_drop_reasons_enabled",
		"1 when the kfree_skb drop reporter runs.", nil, nil)
	descAttached = prometheus.NewDesc(ns+"_interface_attached",
		"1 for every interface observed, with its attach mode.", []string{"interface", "mode"}, nil)

	descSessions = prometheus.NewDesc(ns+"_sessions", "IKE sessions the diagnosis engine holds.", nil, nil)
	descPeers    = prometheus.NewDesc(ns+"_peers", "Peers with path evidence the engine holds.", nil, nil)
	descPMTU     = prometheus.NewDesc(ns+"_peer_path_mtu_bytes",
		"Path-MTU estimates of the peers held (recomputed every 10 s).", nil, nil)
	// Deprecated: split into the ikefrag_engine_* counters below; kept for
	// one release so that dashboards can move.
	descEngine = prometheus.NewDesc(ns+"_engine_events_total",
		"DEPRECATED (removed in the next release): use the ikefrag_engine_*_total counters, one per kind. What the diagnosis engine took in or could not keep, by kind.", []string{"kind"}, nil)
	descRecords = prometheus.NewDesc(ns+"_records_total",
		"Observations the diagnosis engine took in, by kind.", []string{"kind"}, nil)
	descExpired = prometheus.NewDesc(ns+"_sessions_expired_total",
		"Sessions forgotten after diag.idle without traffic.", nil, nil)

	// Deprecated: split into the ikefrag_kernel_ip_* counters below.
	descKernelIP = prometheus.NewDesc(ns+"_kernel_ip_frag_total",
		"DEPRECATED (removed in the next release): use the ikefrag_kernel_ip_*_total counters, one per counter. The kernel's IP fragmentation and reassembly counters (/proc/net/snmp, snmp6) in the daemon's network namespace.",
		[]string{"family", "counter"}, nil)
	descLinkPackets = prometheus.NewDesc(ns+"_link_packets_total", "Link statistics of observed interfaces (netlink).", dirIface, nil)
	descLinkBytes   = prometheus.NewDesc(ns+"_link_bytes_total", "Link byte counts of observed interfaces.", dirIface, nil)
	descLinkDropped = prometheus.NewDesc(ns+"_link_dropped_total", "Packets the link dropped.", dirIface, nil)
	descLinkErrors  = prometheus.NewDesc(ns+"_link_errors_total", "Link errors.", dirIface, nil)
	descLinkMTU     = prometheus.NewDesc(ns+"_link_mtu_bytes", "MTU of observed interfaces.", []string{"interface"}, nil)

	descEngineNamed = func() map[string]*prometheus.Desc {
		m := map[string]*prometheus.Desc{}
		for kind, help := range engineKinds {
			m[kind] = prometheus.NewDesc(ns+"_engine_"+kind+"_total", help, nil, nil)
		}
		return m
	}()
	descKernelNamed = func() map[string]*prometheus.Desc {
		m := map[string]*prometheus.Desc{}
		for counter, k := range kernelIPCounters {
			m[counter] = prometheus.NewDesc(ns+"_kernel_ip_"+k.name+"_total",
				k.help+" (the kernel's "+counter+" in /proc/net/snmp, Ip6"+counter+" in snmp6; the daemon's network namespace).", []string{"family"}, nil)
		}
		return m
	}()

	pmtuBuckets = []float64{576, 1000, 1200, 1280, 1350, 1400, 1420, 1440, 1460, 1480, 1492, 1500, 9000}
)

// engineKinds are the diagnosis engine's counters: each is the metric
// ikefrag_engine_<kind>_total (and, deprecated, ikefrag_engine_events_total
// with kind=<kind>).
var engineKinds = map[string]string{
	"datagrams":        "IKE datagrams (whole, after reassembly) the diagnosis engine took in.",
	"esp":              "ESP-in-UDP datagrams the engine counted toward their peers.",
	"keepalives":       "NAT-T keepalives the engine saw.",
	"copies":           "Datagrams seen again (the same datagram on another interface or direction) and counted once.",
	"retransmits":      "IKE requests and responses sent again (same Message ID, same content).",
	"undecodable":      "Datagrams on the IKE ports the engine could not decode as IKE.",
	"orphan_trains":    "IP fragment trains that never completed and held no IKE header the engine could place.",
	"icmp_too_big":     "ICMP fragmentation-needed and packet-too-big messages the engine took in.",
	"drops":            "Kernel drop reports (kfree_skb) the engine took in.",
	"sessions_evicted": "Sessions evicted at diag.max_sessions (least recently active first).",
	"limited_dropped":  "Observations dropped by the engine's per-session limits.",
}

// kernelIPCounters name the kernel's IP fragmentation counters as metrics.
var kernelIPCounters = map[string]struct{ name, help string }{
	"ReasmReqds":   {"reassembly_fragments", "IP fragments received that needed reassembly"},
	"ReasmOKs":     {"reassembly_ok", "IP datagrams reassembled"},
	"ReasmFails":   {"reassembly_failures", "IP reassembly failures (timeouts, overlaps, memory)"},
	"ReasmTimeout": {"reassembly_timeouts", "IP reassembly queues that timed out (net.ipv4.ipfrag_time)"},
	"FragOKs":      {"fragmented_ok", "IP datagrams this host fragmented"},
	"FragFails":    {"fragmentation_failures", "IP datagrams this host had to fragment but could not (DF set)"},
	"FragCreates":  {"fragments_created", "IP fragments this host created"},
}

// families maps every BPF counter to its metric; counters added later
// land in packets_total under their own name.
var families = func() map[ebpf.CounterID]counterFamily {
	m := map[ebpf.CounterID]counterFamily{
		ebpf.CounterTrainsStarted:    {descTrains, "started", false},
		ebpf.CounterTrainsCompleted:  {descTrains, "completed", false},
		ebpf.CounterTrainsIncomplete: {descTrains, "incomplete", false},
		ebpf.CounterDupFrags:         {descAnomalies, "duplicate", false},
		ebpf.CounterOverlapFrags:     {descAnomalies, "overlap", false},
		ebpf.CounterLateFrags:        {descAnomalies, "late", false},
		ebpf.CounterListFull:         {descAnomalies, "list_full", false},
		ebpf.CounterLRUInsertFail:    {descBPFLoss, "train_map_insert", false},
		ebpf.CounterRingbufFail:      {descBPFLoss, "ringbuf_reserve", false},
	}
	for c := ebpf.CounterID(0); c < ebpf.NumCounters; c++ {
		if _, ok := m[c]; !ok {
			m[c] = counterFamily{descPackets, c.String(), true}
		}
	}
	return m
}()

// collector reads the state that lives elsewhere at scrape time.
type collector struct {
	d          *daemon
	lastErrLog atomic.Int64
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descTrains, descAnomalies, descBPFLoss,
		descTrainsLive, descTrainsEvicted, descObsLoss, descDropReports, descDropsOtherNetns, descDropsEnabled, descAttached, descKernel,
		descSessions, descPeers, descPMTU, descEngine, descRecords, descExpired, descKernelIP,
		descLinkPackets, descLinkBytes, descLinkDropped, descLinkErrors, descLinkMTU} {
		ch <- d
	}
	for _, d := range descEngineNamed {
		ch <- d
	}
	for _, d := range descKernelNamed {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ch <- kernelMetric(c.d.kernel)
	if s, err := c.d.obs.Counters(); err != nil {
		c.warn("reading BPF counters", err)
	} else {
		for _, ic := range s.Interfaces {
			for _, dir := range []struct {
				name string
				dc   *ebpf.DirCounters
			}{{"ingress", &ic.Ingress}, {"egress", &ic.Egress}} {
				for id := ebpf.CounterID(0); id < ebpf.NumCounters; id++ {
					f := families[id]
					v := dir.dc[id]
					counter(f.desc, v.Packets, ic.Name, dir.name, f.label)
					if f.bytes {
						counter(descBytes, v.Bytes, ic.Name, dir.name, f.label)
					}
				}
			}
		}
		gauge(descTrainsLive, float64(s.TrainsLive))
		counter(descTrainsEvicted, s.TrainsEvicted)
		counter(descObsLoss, s.RecordsDropped, "record_queue_full")
		counter(descObsLoss, s.PendingEvicted, "first_fragment_evicted")
		counter(descObsLoss, s.DecodeErrors, "decode_error")
		counter(descObsLoss, s.DropsRingbuf, "drop_ringbuf_reserve")
		counter(descObsLoss, s.DropsUnreadable, "drop_unreadable")
		counter(descDropReports, s.DropsReported)
		counter(descDropsOtherNetns, s.DropsOtherNetns)
		gauge(descDropsEnabled, b2f(s.DropsEnabled))
	}
	for _, ifc := range c.d.watch.attached() {
		gauge(descAttached, 1, ifc.Name, ifc.Mode)
		l, err := netlink.LinkByIndex(ifc.Ifindex)
		if err != nil {
			continue
		}
		gauge(descLinkMTU, float64(l.Attrs().MTU), ifc.Name)
		if st := l.Attrs().Statistics; st != nil {
			counter(descLinkPackets, st.RxPackets, ifc.Name, "rx")
			counter(descLinkPackets, st.TxPackets, ifc.Name, "tx")
			counter(descLinkBytes, st.RxBytes, ifc.Name, "rx")
			counter(descLinkBytes, st.TxBytes, ifc.Name, "tx")
			counter(descLinkDropped, st.RxDropped, ifc.Name, "rx")
			counter(descLinkDropped, st.TxDropped, ifc.Name, "tx")
			counter(descLinkErrors, st.RxErrors, ifc.Name, "rx")
			counter(descLinkErrors, st.TxErrors, ifc.Name, "tx")
		}
	}
	snap := c.d.pipe.snapshot()
	gauge(descSessions, float64(snap.Sessions))
	gauge(descPeers, float64(snap.Peers))
	ch <- pmtuHistogram(snap.PeerMTUs)
	for kind, v := range engineCounts(snap) {
		counter(descEngine, v, kind)
		if d := descEngineNamed[kind]; d != nil {
			counter(d, v)
		}
	}
	rc := c.d.pipe.recordCounts()
	counter(descRecords, rc.Datagrams, "datagram")
	counter(descRecords, rc.TooBig, "icmp_too_big")
	counter(descRecords, rc.Drops, "drop")
	counter(descRecords, c.d.pipe.recTCP.Load(), "tcp_frame")
	counter(descRecords, c.d.pipe.tcpDropped.Load(), "tcp_frame_dropped")
	counter(descExpired, c.d.pipe.expired.Load())
	if k, err := readIPFragStats(); err != nil {
		c.warn("reading /proc/net/snmp", err)
	} else {
		for fam, m := range k {
			for name, v := range m {
				counter(descKernelIP, v, fam, name)
				if d := descKernelNamed[name]; d != nil {
					counter(d, v, fam)
				}
			}
		}
	}
}

func pmtuHistogram(mtus []int) prometheus.Metric {
	buckets := make(map[float64]uint64, len(pmtuBuckets))
	var sum float64
	for _, m := range mtus {
		sum += float64(m)
		for _, b := range pmtuBuckets {
			if float64(m) <= b {
				buckets[b]++
			}
		}
	}
	return prometheus.MustNewConstHistogram(descPMTU, uint64(len(mtus)), sum, buckets)
}

func engineCounts(s *engineSnapshot) map[string]uint64 {
	st := s.Stats
	return map[string]uint64{
		"datagrams": st.Datagrams, "esp": st.ESP, "keepalives": st.Keepalives, "copies": st.Copies,
		"retransmits": st.Retransmits, "undecodable": st.Undecodable, "orphan_trains": st.Orphans,
		"icmp_too_big": st.TooBig, "drops": st.Drops, "sessions_evicted": st.Evicted,
		"limited_dropped": st.LimitedDropped,
	}
}

// warn logs a scrape failure at most once a minute.
func (c *collector) warn(what string, err error) {
	now := time.Now().UnixNano()
	last := c.lastErrLog.Load()
	if now-last < int64(time.Minute) || !c.lastErrLog.CompareAndSwap(last, now) {
		return
	}
	c.d.log.Warn("metrics: "+what+" failed", "err", err)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsServer serves /metrics and /healthz on one listener.
type metricsServer struct {
	addr string
	srv  *http.Server
	ln   net.Listener
}

func startMetrics(addr string, m *metrics, health, degraded func() []string, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}, Timeout: 20 * time.Second}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p := health(); len(p) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, s := range p {
				_, _ = w.Write([]byte(s + "\n"))
			}
			return
		}
		if d := degraded(); len(d) > 0 {
			// Serving, so 200; the body says what is reduced.
			for _, s := range d {
				_, _ = w.Write([]byte("degraded: " + s + "\n"))
			}
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ikefragd: /metrics, /healthz\n"))
	})
	s := &metricsServer{addr: ln.Addr().String(), ln: ln, srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

func (s *metricsServer) close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) { s.l.Warn("metrics", "err", v) }
