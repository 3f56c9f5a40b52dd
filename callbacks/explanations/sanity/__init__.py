"""Sanity checks of heatmap methods: model randomisation, ROAD, deletion and insertion, localisation."""
