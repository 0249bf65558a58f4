"""A trained model put to use: probabilities, heatmaps, the ONNX graphs and the verdict rule."""
