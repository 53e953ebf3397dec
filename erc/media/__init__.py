"""Media access: probing and decoding with PyAV / ffmpeg."""
