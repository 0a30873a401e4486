// Package v1alpha1 declares the NodeFeature object as far as gpu-feature-discovery names it.
package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// NodeFeatureObjNodeNameLabel is the label NFD uses to tie a NodeFeature object to its node.
const NodeFeatureObjNodeNameLabel = "nfd.node.kubernetes.io/node-name"

// Features is empty here: GFD only ever sends NewFeatures().
type Features struct{}

// NewFeatures returns an empty feature set.
func NewFeatures() *Features { return &Features{} }

// NodeFeatureSpec carries the labels GFD computed.
type NodeFeatureSpec struct {
	Features Features          `json:"features"`
	Labels   map[string]string `json:"labels"`
}

// NodeFeature is the per-node object GFD creates or updates.
type NodeFeature struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeFeatureSpec `json:"spec"`
}

// DeepCopy copies the object, its metadata and its label map.
func (in *NodeFeature) DeepCopy() *NodeFeature {
	if in == nil {
		return nil
	}
	out := &NodeFeature{TypeMeta: in.TypeMeta, Spec: NodeFeatureSpec{Features: in.Spec.Features}}
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if in.Spec.Labels != nil {
		out.Spec.Labels = make(map[string]string, len(in.Spec.Labels))
		for k, v := range in.Spec.Labels {
			out.Spec.Labels[k] = v
		}
	}
	return out
}
