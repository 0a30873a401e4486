//go:build tools

// Package gfd pins NVIDIA's k8s-device-plugin module in this module's requirements; build.sh
// builds its gpu-feature-discovery and nvidia-device-plugin commands from it.
package gfd

import (
	_ "github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery"
	_ "github.com/NVIDIA/k8s-device-plugin/cmd/nvidia-device-plugin"
)
