package main

import (
	_ "github.com/google/uuid"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-retryablehttp"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/hashicorp/vault/sdk/framework"
	_ "github.com/hashicorp/vault/sdk/plugin"
	_ "golang.org/x/time/rate"
)

func main() {}
