package tookentest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	neturl "net/url"
	"strings"
	"time"
)

// Event is a webhook payload. It never carries a secret.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt string    `json:"created_at"`
	Data      EventData `json:"data"`
}

// EventData names the token an event is about.
type EventData struct {
	ID string `json:"id"`
}

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the raw body>".
const SignatureHeader = "X-Tooken-Signature"

// Sign returns the X-Tooken-Signature value for a body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks an X-Tooken-Signature value in constant time.
func VerifySignature(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	mac, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(mac, m.Sum(nil))
}

const (
	webhookQueue    = 4096
	webhookAttempts = 3
)

var webhookBackoff = []time.Duration{200 * time.Millisecond, time.Second}

type webhooks struct {
	s      *Server
	urls   []string
	secret []byte
	client *http.Client
	ch     chan []byte
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

func newWebhooks(s *Server, urls []string, secret []byte) *webhooks {
	ctx, cancel := context.WithCancel(context.Background())
	w := &webhooks{
		s:      s,
		urls:   append([]string(nil), urls...),
		secret: secret,
		client: &http.Client{Timeout: 5 * time.Second},
		ch:     make(chan []byte, webhookQueue),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	go w.run()
	return w
}

// emitLocked queues an event for asynchronous delivery (s.mu held).
func (s *Server) emitLocked(typ, tokenID string, now time.Time) {
	if s.hooks == nil || s.closed {
		return
	}
	body, _ := json.Marshal(Event{ID: randHex("evt_"), Type: typ, CreatedAt: fmtTime(now), Data: EventData{ID: tokenID}})
	select {
	case s.hooks.ch <- body:
	default:
		s.count("webhooks_dropped")
	}
}

func (w *webhooks) run() {
	defer close(w.done)
	for body := range w.ch {
		for _, u := range w.urls {
			w.deliver(u, body)
		}
	}
}

// deliver POSTs one event to one endpoint, retrying a failed delivery
// (connection error or non-2xx) up to webhookAttempts times.
func (w *webhooks) deliver(url string, body []byte) {
	var evt Event
	_ = json.Unmarshal(body, &evt)
	sig := Sign(w.secret, body)
	for attempt := 0; attempt < webhookAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(webhookBackoff[attempt-1])
			select {
			case <-t.C:
			case <-w.ctx.Done():
				t.Stop()
			}
		}
		if w.ctx.Err() != nil {
			break
		}
		req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			break
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "tooken-webhooks/1")
		req.Header.Set(SignatureHeader, sig)
		req.Header.Set("X-Tooken-Event", evt.Type)
		req.Header.Set("X-Tooken-Event-Id", evt.ID)
		resp, err := w.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				w.s.count("webhooks_delivered")
				return
			}
		}
	}
	w.s.count("webhooks_failed")
	where := "endpoint"
	if u, err := neturl.Parse(url); err == nil {
		where = u.Redacted()
	}
	w.s.logf("webhook %s %s to %s failed after %d attempts", evt.Type, evt.ID, where, webhookAttempts)
}

// close stops taking events and waits up to grace for queued deliveries.
func (w *webhooks) close(grace time.Duration) {
	close(w.ch)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		w.cancel()
		<-w.done
	}
	w.cancel()
}
