import { Link } from 'expo-router';
import { Image, StyleSheet, Text, View } from 'react-native';

export default function HomeScreen() {
  return (
    <View style={styles.container}>
      <Image source={require('../assets/hive.png')} style={styles.logo} />
      <Text style={styles.title}>HiveSync router home</Text>
      <Link href="/about" style={styles.link}>
        About this app
      </Link>
      <Link href={{ pathname: '/items/[id]', params: { id: '42' } }} style={styles.link}>
        Open item 42
      </Link>
    </View>
  );
}

const styles = StyleSheet.create({
  container: { flex: 1, alignItems: 'center', justifyContent: 'center', backgroundColor: '#eef6ff' },
  logo: { width: 64, height: 64 },
  title: { fontSize: 22, fontWeight: '600', marginVertical: 12 },
  link: { fontSize: 16, color: '#0a5cc2', marginTop: 8 },
});
