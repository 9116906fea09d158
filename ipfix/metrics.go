package ipfix

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns the exporter's Prometheus metrics, one series per
// collector (label collector), read from its counters at each scrape.
func (x *Exporter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&metrics{x: x,
		records:   desc("records_exported_total", "IPFIX data records sent."),
		bytes:     desc("bytes_exported_total", "IPFIX message bytes sent."),
		templates: desc("templates_sent_total", "IPFIX template sets sent."),
		errors:    desc("send_errors_total", "Failed IPFIX sends and connection attempts."),
		dropped:   desc("records_dropped_total", "IPFIX records never sent: the collector's queue was full (a slow or unreachable collector), or a send failed."),
	}}
}

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("stenod_ipfix_"+name, help, []string{"collector"}, nil)
}

type metrics struct {
	x                                          *Exporter
	records, bytes, templates, errors, dropped *prometheus.Desc
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(m, ch) }

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.x.Counters() {
		for _, v := range []struct {
			d *prometheus.Desc
			n uint64
		}{{m.records, c.Records}, {m.bytes, c.Bytes}, {m.templates, c.Templates}, {m.errors, c.SendErrors}, {m.dropped, c.RecordsDropped}} {
			ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.n), c.Collector)
		}
	}
}
