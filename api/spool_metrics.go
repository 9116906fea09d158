package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/spool"
)

// spoolCollector exports the spool's retention and disk budget figures,
// read at each scrape: "how many days do I have?" as a graph.
type spoolCollector struct {
	sp *spool.Spool

	bytes, fileBytes, files, packets, oldest, newest *prometheus.Desc
	size, free, budget, retention, held              *prometheus.Desc
	revoked                                          *prometheus.Desc
	deletedFiles, deletedBytes, deletedPackets       *prometheus.Desc
	writeErrors, writeLost, enospc, shortfalls       *prometheus.Desc
	damagedSkipped, filesRepaired                    *prometheus.Desc
	damagedRegions, damagedBytes, recordsMissing     *prometheus.Desc
	filesQuarantined, indexesSealed, sealCPU         *prometheus.Desc
	indexCPU, indexFull                              *prometheus.Desc
}

func newSpoolCollector(sp *spool.Spool) *spoolCollector {
	dir := []string{"dir"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("stenod_spool_"+name, help, labels, nil)
	}
	return &spoolCollector{
		sp:               sp,
		bytes:            d("packet_bytes", "Pcap bytes indexed in the directory.", dir),
		fileBytes:        d("file_bytes", "Bytes the directory's spool files take (pcap and index).", dir),
		files:            d("files", "Spool files in the directory.", dir),
		packets:          d("packets", "Packets stored in the directory.", dir),
		oldest:           d("oldest_packet_timestamp_seconds", "Timestamp of the oldest stored packet.", dir),
		newest:           d("newest_packet_timestamp_seconds", "Timestamp of the newest stored packet.", dir),
		size:             d("filesystem_size_bytes", "Size of the directory's file system.", dir),
		free:             d("filesystem_free_bytes", "Bytes available on the directory's file system.", dir),
		budget:           d("budget_bytes", "Most bytes the directory may hold under the disk budget.", dir),
		retention:        d("expected_retention_seconds", "Packet time the directory holds once its budget is full, at the current rate.", dir),
		held:             d("held_bytes", "Bytes of deleted spool files that queries still hold open; they come back when the queries end.", dir),
		revoked:          d("readers_revoked_total", "Queries cut off because capture needed the space of deleted files they held open.", nil),
		deletedFiles:     d("deleted_files_total", "Spool files deleted by the disk budget.", nil),
		deletedBytes:     d("deleted_bytes_total", "Bytes deleted by the disk budget.", nil),
		deletedPackets:   d("deleted_packets_total", "Packets deleted by the disk budget.", nil),
		writeErrors:      d("write_errors_total", "Failed spool writes.", nil),
		writeLost:        d("write_lost_packets_total", "Packets lost to failed spool writes.", nil),
		enospc:           d("enospc_events_total", "Writes that found the disk full.", nil),
		shortfalls:       d("budget_shortfalls_total", "Times the budget could not be met by deleting old files.", nil),
		damagedSkipped:   d("damaged_records_skipped_total", "Records queries left out because they are not what their index says (checksum, length, or the file cut short).", nil),
		filesRepaired:    d("files_repaired_total", "Spool files repaired beyond what a crash leaves: a damaged file header rewritten, damaged regions stepped over, a file found shorter than its index re-indexed.", nil),
		damagedRegions:   d("damaged_regions_total", "Damaged byte ranges of pcap files that repair stepped over: no intact record in them, so no packet indexed; the bytes stay in the file.", nil),
		damagedBytes:     d("damaged_bytes_total", "Bytes of the damaged regions repair stepped over.", nil),
		recordsMissing:   d("records_missing_total", "Records a sealed index or a sums journal lists that repair did not find intact: packets known lost (damaged, or cut off with the file's end).", nil),
		filesQuarantined: d("files_quarantined_total", "Files moved into a spool directory's quarantine folder instead of being read: no intact record, not a regular file, or a copy of another spool file.", nil),
		indexesSealed:    d("indexes_sealed_total", "Live indexes sealed into index files, one per spool file at rotation and at close.", nil),
		sealCPU:          d("seal_cpu_seconds_total", "CPU time spent sealing indexes: encoding them and reading them back, not writing them.", nil),
		indexCPU:         d("index_cpu_seconds_total", "CPU time spent adding packets to live indexes, measured on the writers' threads.", nil),
		indexFull:        d("index_full_rotations_total", "Spool files ended early because their live index reached spool.max_live_index (a flood of new flows).", nil),
	}
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, u := range c.sp.Usage() {
		gauge(c.bytes, float64(u.Bytes), u.Dir)
		gauge(c.fileBytes, float64(u.FileBytes), u.Dir)
		gauge(c.files, float64(u.Files), u.Dir)
		gauge(c.packets, float64(u.Packets), u.Dir)
		if u.Packets > 0 {
			gauge(c.oldest, float64(u.Oldest)/1e9, u.Dir)
			gauge(c.newest, float64(u.Newest)/1e9, u.Dir)
		}
		gauge(c.size, float64(u.TotalBytes), u.Dir)
		gauge(c.free, float64(u.FreeBytes), u.Dir)
		gauge(c.budget, float64(u.BudgetBytes), u.Dir)
		gauge(c.retention, u.Retention().Seconds(), u.Dir)
		gauge(c.held, float64(u.HeldBytes), u.Dir)
	}
	n := c.sp.Counters()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(c.revoked, n.ReadersRevoked)
	counter(c.deletedFiles, n.FilesDeleted)
	counter(c.deletedBytes, n.BytesDeleted)
	counter(c.deletedPackets, n.PacketsDeleted)
	counter(c.writeErrors, n.WriteErrors)
	counter(c.writeLost, n.PacketsLostToWriteErrors)
	counter(c.enospc, n.ENOSPCEvents)
	counter(c.shortfalls, n.BudgetShortfalls)
	counter(c.damagedSkipped, n.DamagedRecordsSkipped)
	counter(c.filesRepaired, n.FilesRepaired)
	counter(c.damagedRegions, n.DamagedRegions)
	counter(c.damagedBytes, n.DamagedBytes)
	counter(c.recordsMissing, n.RecordsMissing)
	counter(c.filesQuarantined, n.FilesQuarantined)
	counter(c.indexesSealed, n.IndexesSealed)
	counter(c.indexFull, n.IndexFullRotations)
	ch <- prometheus.MustNewConstMetric(c.sealCPU, prometheus.CounterValue, n.SealCPUSeconds)
	ch <- prometheus.MustNewConstMetric(c.indexCPU, prometheus.CounterValue, n.IndexCPUSeconds)
}
