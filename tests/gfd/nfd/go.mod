// Stands in for sigs.k8s.io/node-feature-discovery v0.15.7, which the Go module proxy refuses.
// gpu-feature-discovery imports it only for its NodeFeature-API output (--use-node-feature-api),
// which the label-equality test never enables: this module declares just the names GFD needs to
// compile, and its client constructor fails, so that path can never silently do nothing.
module sigs.k8s.io/node-feature-discovery

go 1.22

require k8s.io/apimachinery v0.31.3
