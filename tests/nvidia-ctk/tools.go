//go:build tools

// Package ctk pins NVIDIA's container toolkit in this module's requirements; run.sh builds its
// nvidia-ctk command from it.
package ctk

import _ "github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-ctk"
