from starcli.cli import main

main()
