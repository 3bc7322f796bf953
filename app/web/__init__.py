"""Server-rendered pages in English and Japanese, their static files and their security."""
