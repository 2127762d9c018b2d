package tookenapi

import (
	"context"
	"errors"
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

// MaxRetryWait is the longest wait between two attempts of a call: the
// backoff never exceeds it, and a Retry-After (429, 503) longer than it, or
// past the call's deadline, is not waited for: the call fails at once with
// the answer, whose RetryAfter carries the server's ask. A request that
// reaches a Tooken asking for an hour answers in seconds, not in an hour or
// at its deadline; work that can wait longer (the revoke queue) keeps the
// ask itself.
const MaxRetryWait = 5 * time.Second

// maxRetryAfterSeconds bounds a parsed Retry-After (a year), so that a huge
// value cannot overflow a time.Duration.
const maxRetryAfterSeconds = 366 * 24 * 3600

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
// A 429 or 503 whose Retry-After is longer than MaxRetryWait or lies past
// the request's deadline is not retried, so that the caller gets the answer
// (with the ask) at once.
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
		if errors.Is(err, ErrForbiddenAddress) {
			return false, nil
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	if ra, ok := retryAfter(resp); ok && isRetryAfterStatus(resp.StatusCode) && !waitFits(ctx, ra) {
		return false, nil
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true, nil
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return true, nil
	case inFlight:
		return true, nil
	}
	return false, nil
}

// isRetryAfterStatus tells whether a Retry-After of an answer with this
// status is honoured: 429 and 503.
func isRetryAfterStatus(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// waitFits tells whether the client waits d before the next attempt: at most
// MaxRetryWait, and not past ctx's deadline.
func waitFits(ctx context.Context, d time.Duration) bool {
	if d > MaxRetryWait {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > d
}

// backoff waits Retry-After on 429/503 when given (checkRetry has made sure
// that it is at most MaxRetryWait), otherwise exponentially longer with
// jitter, between min and max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && isRetryAfterStatus(resp.StatusCode) {
		if ra, ok := retryAfter(resp); ok && ra > 0 {
			// A little jitter on top, never below the server's ask, never
			// above the ceiling.
			return min(ra+rand.N(ra/10+time.Millisecond), max(ra, MaxRetryWait))
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
		return time.Duration(min(s, maxRetryAfterSeconds)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}
