"""Data: readers into one Arrow frame schema, cleaning, actions, statistics, chunking, mixtures."""
