//go:build tools

// Package tools pins the deploy tools the tests render issueops' Kustomize
// base and Helm chart with.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
