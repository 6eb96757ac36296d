package attacktest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

func TestTableIsWellFormed(t *testing.T) {
	kinds := map[Kind]bool{KindSignature: true, KindUntrustedKey: true, KindManifest: true, KindDowngrade: true, KindCounter: true,
		KindHardware: true, KindChunkMAC: true, KindFrame: true, KindHash: true, KindTimeout: true}
	id := regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	names, ids, used := map[string]bool{}, map[string]bool{}, map[Kind]bool{}
	for _, a := range Attacks() {
		if a.Name == "" || names[a.Name] || !id.MatchString(a.ID) || ids[a.ID] || !kinds[a.Kind] || a.Setup == nil || a.AgentError == "" {
			t.Errorf("row %q (%q, kind %q): want a unique name and id, a known kind, a setup and the agent's error", a.Name, a.ID, a.Kind)
		}
		names[a.Name], ids[a.ID], used[a.Kind] = true, true, true
	}
	for k := range kinds {
		if !used[k] {
			t.Errorf("no attack of kind %s", k)
		}
	}
}

func TestFrames(t *testing.T) {
	a := protocol.Frame{Index: 7, MAC: [32]byte{1}, Data: []byte("hello")}
	b := protocol.Frame{Index: 8, MAC: [32]byte{2}, Data: []byte("hi")}
	body := JoinFrames([]protocol.Frame{a, b})
	fs := SplitFrames(append(bytes.Clone(body), 0, 0, 0)) // a cut frame at the end is left out
	if len(fs) != 2 || fs[0].Index != 7 || fs[1].MAC != b.MAC || string(fs[1].Data) != "hi" {
		t.Fatalf("split %+v", fs)
	}
	fs[0].Data[0] = 'j'
	if !bytes.Equal(JoinFrames(SplitFrames(body)), body) || body[protocol.FrameHeaderSize] != 'h' {
		t.Fatal("round trip changed the answer, or editing a frame changed it")
	}
}

func TestEditCheck(t *testing.T) {
	manifest := base64.StdEncoding.EncodeToString([]byte(`{"version": "1.0.4", "iv": "00ff"}`))
	offer, _ := json.Marshal(map[string]any{"update": true, "manifest": manifest})
	none := []byte(`{"update":false,"message":"no update","next_chunk":0}`)
	if got := EditManifest(`1\.0\.4`, "9.9.9")(none); !bytes.Equal(got, none) {
		t.Fatalf("an answer without an offer was changed: %s", got)
	}
	decoded := func(b []byte) string {
		var m map[string]any
		json.Unmarshal(b, &m)
		raw, _ := base64.StdEncoding.DecodeString(m["manifest"].(string))
		return string(raw)
	}
	if got := decoded(EditManifest(`"version": "1.0.4"`, `"version": "9.9.9"`)(offer)); got != `{"version": "9.9.9", "iv": "00ff"}` {
		t.Fatalf("edited manifest %s", got)
	}
	if got := decoded(FlipManifestField("iv")(offer)); got != `{"version": "1.0.4", "iv": "10ff"}` {
		t.Fatalf("flipped manifest %s", got)
	}
}
