package keys

import "github.com/prometheus/client_golang/prometheus"

// The key listener's counters (RemoteStats) as Prometheus counters, the
// same in ikefragd and in the lab's proxy runner.
var (
	descListenerConns = prometheus.NewDesc("ikefrag_keys_listener_connections_total",
		"Key forwarder connections accepted: TLS 1.3 with a certificate on keys.listen.clients.", nil, nil)
	descListenerRefused = prometheus.NewDesc("ikefrag_keys_listener_refused_total",
		"Key forwarder connections refused: failed handshake, certificate not on the list, too many connections.", nil, nil)
	descListenerMessages = prometheus.NewDesc("ikefrag_keys_listener_messages_total",
		"Key messages from forwarders, by result (forbidden: for a VPN server the client is not configured for).", []string{"result"}, nil)
)

// Collector exports r's counters.
func (r *Remote) Collector() prometheus.Collector { return remoteCollector{r} }

type remoteCollector struct{ r *Remote }

func (c remoteCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descListenerConns
	ch <- descListenerRefused
	ch <- descListenerMessages
}

func (c remoteCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Stats()
	ch <- prometheus.MustNewConstMetric(descListenerConns, prometheus.CounterValue, float64(st.Conns))
	ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(st.Refused))
	for _, m := range []struct {
		result string
		n      uint64
	}{{"added", st.Added}, {"deleted", st.Deleted}, {"forbidden", st.Forbidden}, {"unsupported", st.Unsupported}, {"malformed", st.Malformed}} {
		ch <- prometheus.MustNewConstMetric(descListenerMessages, prometheus.CounterValue, float64(m.n), m.result)
	}
}
