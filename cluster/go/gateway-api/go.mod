// Pins the Gateway API release whose CRDs (config/crd/*/*.yaml in the module)
// the test cluster installs: the one Traefik 3.7 is built against. Nothing is
// compiled here; go.sum verifies the download.
module canaryd.local/cluster/gateway-api

go 1.24

require sigs.k8s.io/gateway-api v1.6.3
