//go:build tools

// Package gfd pins NVIDIA's gpu-feature-discovery in this module's requirements; run.sh builds
// github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery from it.
package gfd

import _ "github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery"
