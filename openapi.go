package tooken

import (
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The OpenAPI document of the mount (sys/internal/specs/openapi, vault path-help).
// Every operation declares its Responses; these helpers build the common ones.

// dataResponse is a 200 answer carrying fields.
func dataResponse(desc string, fields map[string]*framework.FieldSchema) map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusOK: {{Description: desc, Fields: fields}}}
}

// writeResponses are the answers of a write that returns nothing but
// warnings: 204 without warnings, 200 with them.
func writeResponses(desc string) map[int][]framework.Response {
	return map[int][]framework.Response{
		http.StatusNoContent: {{Description: desc}},
		http.StatusOK:        {{Description: desc + " The answer carries warnings only."}},
	}
}

// deleteResponses is the answer of a delete.
func deleteResponses(desc string) map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusNoContent: {{Description: desc}}}
}

// listResponses is the answer of a list.
func listResponses(desc string) map[int][]framework.Response {
	return dataResponse(desc, map[string]*framework.FieldSchema{
		"keys": {Type: framework.TypeStringSlice, Description: "The names."},
	})
}

// Field schemas of values read back: durations are whole seconds, times
// RFC 3339 UTC in whole seconds.
func secondsField(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeInt64, Description: desc + " (seconds)."}
}

func timeField(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeTime, Description: desc + " (RFC 3339, UTC; null when none)."}
}

// inlineOpenAPIRefs replaces the references to named schemas in the
// OpenAPI document's request bodies and responses with the schemas
// themselves. Vault 1.14 decodes a plugin's document with an SDK whose
// decoder has no name for "$ref" and drops it, which leaves every request
// and response body an empty object ({}); inline schemas survive. The named
// schemas stay in the document's components.
func inlineOpenAPIRefs(resp *logical.Response) {
	if resp == nil {
		return
	}
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	if !ok {
		return
	}
	inline := func(c framework.OASContent) {
		for _, mt := range c {
			if mt == nil || mt.Schema == nil || mt.Schema.Ref == "" {
				continue
			}
			name := strings.TrimPrefix(mt.Schema.Ref, "#/components/schemas/")
			if s, ok := doc.Components.Schemas[name]; ok {
				mt.Schema = s
			}
		}
	}
	for _, item := range doc.Paths {
		for _, op := range []*framework.OASOperation{item.Get, item.Post, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			if op.RequestBody != nil {
				inline(op.RequestBody.Content)
			}
			for _, r := range op.Responses {
				if r != nil {
					inline(r.Content)
				}
			}
		}
	}
}
