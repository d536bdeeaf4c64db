"""Device meshes and the logical-axis table that shards the model on them."""
