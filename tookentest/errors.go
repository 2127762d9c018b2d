package tookentest

import "net/http"

// apiError is an answer in the contract's error shape.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter int // seconds; sent as Retry-After when > 0
}

func errInvalid(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request", msg, 0}
}
func errUnauthorized(msg string) *apiError {
	return &apiError{http.StatusUnauthorized, "unauthorized", msg, 0}
}
func errForbidden(msg string) *apiError { return &apiError{http.StatusForbidden, "forbidden", msg, 0} }
func errScopeNotHeld(msg string) *apiError {
	return &apiError{http.StatusForbidden, "scope_not_held", msg, 0}
}
func errNotFound(msg string) *apiError { return &apiError{http.StatusNotFound, "not_found", msg, 0} }
func errConflict(msg string) *apiError { return &apiError{http.StatusConflict, "conflict", msg, 0} }
func errIdempotencyReused(msg string) *apiError {
	return &apiError{http.StatusUnprocessableEntity, "idempotency_key_reused", msg, 0}
}
func errRateLimited(msg string, retryAfter int) *apiError {
	return &apiError{http.StatusTooManyRequests, "rate_limited", msg, retryAfter}
}
func errUnavailable(msg string) *apiError {
	return &apiError{http.StatusServiceUnavailable, "unavailable", msg, 0}
}

// codeForStatus is the contract's error code for a status (used by faults).
func codeForStatus(status int) string {
	switch status {
	case 400:
		return "invalid_request"
	case 401:
		return "unauthorized"
	case 403:
		return "forbidden"
	case 404:
		return "not_found"
	case 409:
		return "conflict"
	case 422:
		return "idempotency_key_reused"
	case 429:
		return "rate_limited"
	case 502, 503, 504:
		return "unavailable"
	case 500:
		return "internal"
	}
	if status >= 500 {
		return "internal"
	}
	return "invalid_request"
}

type errorJSON struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}
