//go:build tools

// Package tools pins the commands scripts/cluster builds from this module:
// the API server, controller-manager and kubelet of Kubernetes v1.37.2, and
// etcd at the version that release pins (go.etcd.io/etcd/server/v3).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
