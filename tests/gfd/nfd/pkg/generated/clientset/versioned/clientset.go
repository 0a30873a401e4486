// Package versioned declares the NodeFeature client GFD's NodeFeature-API path uses. There is no
// implementation: NewForConfig always fails, which GFD reports as "create nfd client: ...".
package versioned

import (
	"context"
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nfdv1alpha1 "sigs.k8s.io/node-feature-discovery/pkg/apis/nfd/v1alpha1"
)

// ErrUnavailable is what NewForConfig returns: this build cannot talk to the NodeFeature API.
var ErrUnavailable = errors.New("the NodeFeature API is not built into this gpu-feature-discovery (fake-gpu-operator tests/gfd stand-in module)")

// NodeFeatureInterface reads and writes NodeFeature objects in one namespace.
type NodeFeatureInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*nfdv1alpha1.NodeFeature, error)
	Create(ctx context.Context, obj *nfdv1alpha1.NodeFeature, opts metav1.CreateOptions) (*nfdv1alpha1.NodeFeature, error)
	Update(ctx context.Context, obj *nfdv1alpha1.NodeFeature, opts metav1.UpdateOptions) (*nfdv1alpha1.NodeFeature, error)
}

// NfdV1alpha1Interface groups the nfd.k8s-sigs.io/v1alpha1 resources.
type NfdV1alpha1Interface interface {
	NodeFeatures(namespace string) NodeFeatureInterface
}

// Interface is the clientset.
type Interface interface {
	NfdV1alpha1() NfdV1alpha1Interface
}

// NewForConfig takes the client configuration (a *rest.Config in the real module) and always
// fails; the parameter is untyped so this module needs no client-go.
func NewForConfig(_ any) (Interface, error) { return nil, ErrUnavailable }
