package tookentest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// BenchmarkCreateRevoke measures one create plus one revoke over loopback
// HTTP with a keep-alive client (no state file, no webhooks, no rate limit).
//
//	go test -run '^$' -bench BenchmarkCreateRevoke -benchtime 3s ./tookentest/
func BenchmarkCreateRevoke(b *testing.B) {
	s := NewServer(Options{RateLimit: -1})
	defer s.Close()
	root := "Bearer " + s.RootSecret()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	body := []byte(`{"name":"bench","scopes":["billing:read"],"metadata":{"vault_role":"bench"}}`)
	send := func(method, url string, body []byte, want int) []byte {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Authorization", root)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			b.Fatalf("%s %s: %d %s", method, url, res.StatusCode, out)
		}
		return out
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var tok struct {
			ID string `json:"id"`
		}
		for pb.Next() {
			out := send("POST", s.URL()+"/tokens", body, http.StatusCreated)
			if err := json.Unmarshal(out, &tok); err != nil {
				b.Fatal(err)
			}
			send("DELETE", s.URL()+"/tokens/"+tok.ID, nil, http.StatusNoContent)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
