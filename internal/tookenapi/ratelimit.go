package tookenapi

import (
	"net/http"
	"strconv"
	"sync/atomic"
)

// rateLimit is what Tooken's answers say of the caller's rate limit: every
// answer carries X-RateLimit-Limit and X-RateLimit-Remaining.
type rateLimit struct {
	limit, remaining atomic.Int64
	known            atomic.Bool
}

// noteRateLimit records the rate-limit headers of an answer (of any attempt,
// retries included); an answer without them changes nothing.
func (c *Client) noteRateLimit(resp *http.Response) {
	if resp == nil {
		return
	}
	limit, err1 := strconv.ParseInt(resp.Header.Get("X-RateLimit-Limit"), 10, 64)
	remaining, err2 := strconv.ParseInt(resp.Header.Get("X-RateLimit-Remaining"), 10, 64)
	if err1 != nil || err2 != nil || limit <= 0 || remaining < 0 {
		return
	}
	c.rate.limit.Store(limit)
	c.rate.remaining.Store(remaining)
	c.rate.known.Store(true)
}

// RateLimit is the caller's rate limit as Tooken's latest answer gave it:
// the limit (X-RateLimit-Limit) and the requests left now
// (X-RateLimit-Remaining). ok is false until an answer carried both.
func (c *Client) RateLimit() (limit, remaining int64, ok bool) {
	if !c.rate.known.Load() {
		return 0, 0, false
	}
	return c.rate.limit.Load(), c.rate.remaining.Load(), true
}
