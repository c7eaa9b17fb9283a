"""The cache layer's Pulumi components, their settings and the renderers they share."""
