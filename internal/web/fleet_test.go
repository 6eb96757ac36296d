package web

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
)

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	dev := func(id, hw, version string, seen time.Duration, labels map[string]string) *fota.Device {
		d := &fota.Device{ID: id, Hardware: hw, Version: version, Labels: labels}
		if seen >= 0 {
			d.LastSeen = now.Add(-seen)
		}
		return d
	}
	devices := []*fota.Device{
		dev("a", "esp32", "1.0.3", time.Hour, map[string]string{"site": "x"}),
		dev("b", "esp32", "1.0.3", 20*time.Hour, map[string]string{"site": "y"}),
		dev("c", "esp32", "1.0.10", time.Minute, map[string]string{"site": "x"}),
		dev("d", "esp32s3", "1.0.3", -1, nil), // never seen
		dev("e", "esp32", "", time.Minute, nil),
	}
	active := map[string]*fota.Session{"c": {DeviceID: "c"}}
	fl := summarize(devices, active, deviceFilter{}, now, 13*time.Hour)
	if fl.Total != 5 || fl.Online != 2 || fl.Updating != 1 || fl.Offline != 2 {
		t.Fatalf("counts %+v", fl)
	}
	// Newest version first (1.0.10 is newer than 1.0.3), text that is no
	// version last.
	var order []string
	for _, v := range fl.Versions {
		order = append(order, v.Version)
	}
	if got := strings.Join(order, " "); got != "1.0.10 1.0.3 unknown" {
		t.Fatalf("versions %q", got)
	}
	v3 := fl.Versions[1]
	if v3.Total != 3 || v3.Counts[stateOnline] != 1 || v3.Counts[stateOffline] != 2 {
		t.Fatalf("1.0.3 row %+v", v3)
	}
	// The longest bar spans the chart; segments follow one another.
	last := v3.Segments[len(v3.Segments)-1]
	if last.X+last.W != 100 || v3.Segments[0].X != 0 {
		t.Fatalf("1.0.3 segments %+v", v3.Segments)
	}
	if len(fl.Hardware) != 2 || fl.Hardware[0].Name != "esp32" || fl.Hardware[0].Count != 4 {
		t.Fatalf("hardware %+v", fl.Hardware)
	}

	f, err := readFilterValues("site=x", "", "online")
	if err != nil {
		t.Fatal(err)
	}
	fl = summarize(devices, active, f, now, 13*time.Hour)
	if fl.Total != 1 || fl.Versions[0].Version != "1.0.3" {
		t.Fatalf("site=x, online: %+v", fl)
	}
	if got := fl.Versions[0].Link; got != "/devices?labels=site%3Dx&state=online&version=1.0.3" {
		t.Fatalf("drill-down link %q keeps not the filter", got)
	}
	if _, err := readFilterValues("", "", "sleeping"); fota.ErrorCode(err) != fota.EINVALID {
		t.Fatalf("an unknown state: %v", err)
	}
}

func readFilterValues(labels, q, state string) (deviceFilter, error) {
	r := httptest.NewRequest("GET", "/fleet?"+url.Values{"labels": {labels}, "q": {q}, "state": {state}}.Encode(), nil)
	return readFilter(r)
}
