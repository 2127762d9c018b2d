package tookenapi

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

const (
	retryWaitMin = 100 * time.Millisecond
	retryWaitMax = 3 * time.Second
)

type trackerKey struct{}

// attemptTracker records, across the attempts of one call, whether any of
// them may have been carried out by the server.
type attemptTracker struct{ mayHaveReached bool }

// markReached notes in ctx's tracker that an attempt may have been carried
// out upstream.
func markReached(ctx context.Context) {
	if tr, ok := ctx.Value(trackerKey{}).(*attemptTracker); ok {
		tr.mayHaveReached = true
	}
}

// checkRetry is the retry policy: connection errors, 5xx (but 501), 429, and
// 409 "still in flight" to a POST with an Idempotency-Key.
// A 429 whose Retry-After lies past the request's deadline is not retried,
// so that the caller gets the RateLimitError at once.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	// A 409 to a POST carrying an Idempotency-Key means that an earlier
	// attempt with that key is still being processed (as at Stripe): it may
	// succeed, and a later retry gets its answer replayed.
	inFlight := err == nil && resp.StatusCode == http.StatusConflict &&
		resp.Request != nil && resp.Request.Header.Get("Idempotency-Key") != ""
	if (err != nil && mayHaveBeenSent(err)) || (err == nil && resp.StatusCode >= 500) || inFlight {
		markReached(ctx)
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		if dl, ok := ctx.Deadline(); ok {
			ra, _ := retryAfter(resp)
			if time.Until(dl) <= ra {
				return false, nil
			}
		}
		return true, nil
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return true, nil
	case inFlight:
		return true, nil
	}
	return false, nil
}

// backoff waits Retry-After on 429/503 when given, otherwise exponentially
// longer with jitter, between min and max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if ra, ok := retryAfter(resp); ok && ra > 0 {
			// A little jitter on top, never below the server's ask.
			return ra + rand.N(ra/10+time.Millisecond)
		}
	}
	return Backoff(minWait, maxWait, attempt)
}

// Backoff is the wait before retry number attempt (from 0): exponentially
// longer from minWait, at most maxWait, with equal jitter (half fixed, half
// random).
func Backoff(minWait, maxWait time.Duration, attempt int) time.Duration {
	base := maxWait
	if attempt < 30 {
		if b := minWait << attempt; b > 0 && b < maxWait {
			base = b
		}
	}
	return base/2 + rand.N(base/2+1)
}

// retryAfter parses a Retry-After header (seconds or HTTP date).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}
