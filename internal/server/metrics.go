package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ecowatt/fota"
)

// PoolStats is what a store with a connection pool reports for /metrics.
type PoolStats interface {
	PoolStats() (open, inUse, idle int)
}

// SessionCounter is a store that keeps counts of its active sessions:
// /metrics reads those rather than list every session at each scrape
// (10,000 during a rollout wave).
type SessionCounter interface {
	ActiveSessionCounts(ctx context.Context) (total, native, ecowatt int, err error)
}

// metrics are the server's Prometheus series, in a registry of its own so
// that several servers in one process (tests) do not collide.
type metrics struct {
	registry   *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	chunkBytes *prometheus.CounterVec
	// updateBytes splits the bytes served to update sessions by artifact:
	// delta patches against full images.
	updateBytes *prometheus.CounterVec
	updates     *prometheus.CounterVec
}

func newMetrics(store fota.Store, notifier fota.Notifier) *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fota_http_requests_total",
		Help: "HTTP requests by route and status."}, []string{"route", "status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fota_http_request_duration_seconds",
		Help:    "Time to answer, by route (the check routes are the check latency).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}}, []string{"route"})
	m.chunkBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fota_chunk_bytes_total",
		Help: "Ciphertext bytes served in chunks, by API."}, []string{"api"})
	m.updateBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fota_update_bytes_total",
		Help: "Ciphertext bytes served to update sessions, by artifact (delta or full)."}, []string{"artifact"})
	m.updates = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fota_updates_total",
		Help: "Update sessions ended, by outcome (confirmed, rolled-back, failed, verified-failed)."}, []string{"outcome"})
	m.registry.MustRegister(m.requests, m.duration, m.chunkBytes, m.updateBytes, m.updates, rolloutCollector{store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_sessions_open", Help: "Active update sessions."}, func() float64 {
			if c, ok := store.(SessionCounter); ok {
				total, _, _, err := c.ActiveSessionCounts(context.Background())
				if err != nil {
					return -1
				}
				return float64(total)
			}
			sessions, err := store.ActiveSessions(context.Background())
			if err != nil {
				return -1
			}
			return float64(len(sessions))
		}))
	if push, ok := notifier.(fota.PushStatser); ok {
		m.registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_push_connected",
				Help: "1 while push notifications can be published (the server's broker runs, or the external broker is connected)."},
				func() float64 {
					if push.PushStats().Connected {
						return 1
					}
					return 0
				}))
		if push.PushStats().Devices >= 0 {
			m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_push_devices_connected",
				Help: "Devices connected to the server's MQTT broker."}, func() float64 { return float64(push.PushStats().Devices) }))
		}
		for _, r := range []struct {
			result string
			pick   func(fota.PushStats) uint64
		}{{"published", func(p fota.PushStats) uint64 { return p.Published }}, {"delivered", func(p fota.PushStats) uint64 { return p.Delivered }},
			{"dropped", func(p fota.PushStats) uint64 { return p.Dropped }}} {
			if r.result == "delivered" && push.PushStats().Devices < 0 {
				continue // an external broker does not say
			}
			m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fota_push_notifications_total",
				Help:        "Push notifications: published (handed to the broker), delivered (written to a device's connection), dropped (lost: queue full or broker away).",
				ConstLabels: prometheus.Labels{"result": r.result}}, func() float64 { return float64(r.pick(push.PushStats())) }))
		}
	}
	if ps, ok := store.(PoolStats); ok {
		for _, g := range []struct {
			name string
			pick func(o, u, i int) int
		}{{"open", func(o, _, _ int) int { return o }}, {"in_use", func(_, u, _ int) int { return u }}, {"idle", func(_, _, i int) int { return i }}} {
			m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_db_connections_" + g.name,
				Help: "Database pool connections: " + g.name + "."}, func() float64 { return float64(g.pick(ps.PoolStats())) }))
		}
	}
	return m
}

func (m *metrics) observe(route string, status int, took time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(took.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// rolloutCollector reports the devices of each rollout that offers or
// holds devices, per state, read at scrape time.
type rolloutCollector struct{ store fota.Store }

var rolloutDevicesDesc = prometheus.NewDesc("fota_rollout_devices",
	"Devices of a rollout that is not aborted or completed, by where they stand (offered includes downloading and silent).",
	[]string{"rollout", "release", "state"}, nil)

var rolloutStateDesc = prometheus.NewDesc("fota_rollout_wave",
	"Highest open wave of a rollout that is not aborted or completed, labelled with its state.", []string{"rollout", "release", "state"}, nil)

func (rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rolloutDevicesDesc
	ch <- rolloutStateDesc
}

func (c rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	rollouts, err := c.store.Rollouts(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for _, r := range rollouts {
		if !fota.RolloutHolds(r.State) {
			continue
		}
		tally, err := c.store.RolloutTally(ctx, r.ID, now.Add(-r.SilentTimeout))
		if err != nil {
			return
		}
		sum := fota.SumTallies(tally)
		id := strconv.FormatInt(r.ID, 10)
		for state, n := range map[string]int{fota.MemberPending: sum.Pending, fota.MemberOffered: sum.Offered, fota.MemberDownloading: sum.Downloading,
			fota.MemberSilent: sum.Silent, fota.MemberConfirmed: sum.Confirmed, fota.MemberFailed: sum.Failed} {
			ch <- prometheus.MustNewConstMetric(rolloutDevicesDesc, prometheus.GaugeValue, float64(n), id, r.ReleaseVersion, state)
		}
		ch <- prometheus.MustNewConstMetric(rolloutStateDesc, prometheus.GaugeValue, float64(r.Wave), id, r.ReleaseVersion, r.State)
	}
}
