module github.com/ecowatt/fota

go 1.26.8
