fn main() {
    println!("soustitre");
}
