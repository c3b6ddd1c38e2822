from keras_ucaps.cli import main

main(prog_name="keras-ucaps")
