"""HDF5 I/O, lazy dask arrays over HDF5, fitted invertible transforms, torch-side batching."""
