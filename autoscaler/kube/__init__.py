"""Kubernetes adapter.

    api        the VariantAutoscaling resource as pydantic models (the CRD is generated from them: schema)
    client     the loop's ports: KubeVariantSource, KubeScaler; load_api_client, apply_crd
    scale      the scale subresource of any kind        status   conditions and status patches (pure)
    events     events.k8s.io Events                     drain    pod-deletion-cost before a scale-down
    machines   NodePlanExecutor: carries out the node plan (sized by core.nodes)
    lease      leader election over a Lease             failures API errors -> ActuationError + reason

Owns every Kubernetes read and write (the controller's ports over the API). May import: config, controller, core,
errors, logs.
"""
