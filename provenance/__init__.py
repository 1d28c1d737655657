"""Trust beside the classifier: Content Credentials (C2PA) read from the media itself."""
